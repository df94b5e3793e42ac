#pragma once
// The sketch canvas: a picture (white paper, an opened image, or a result sent back as input)
// with a paint layer over it. Brush with size, colour and opacity (a whole stroke has one
// opacity, overlaps do not darken), eraser (erases paint, revealing the picture), flood fill,
// undo and redo by whole stroke, clear, tablet pressure. Opening, pasting and dropping an image
// replace the picture (undoable).
//
// An inpainting mask lies over both: with mask editing on, the brush paints the mask, the eraser
// takes it away and the fill masks an area of one colour. It is drawn as a see-through red
// overlay while shown, is not part of image(), and stays when the picture is replaced (to
// repaint the same part of the next result); clear() and clearMask() remove it.
#include <QColor>
#include <QImage>
#include <QList>
#include <QPointF>
#include <QWidget>

namespace sds::ui {

class SketchCanvas : public QWidget {
    Q_OBJECT
  public:
    enum class Tool { Brush, Eraser, Fill };
    explicit SketchCanvas(QWidget* parent = nullptr);

    // The picture's size in pixels (the generation size); the content is scaled to it.
    void setImageSize(QSize size);
    QSize imageSize() const { return picture_.size(); }
    // The composited sketch, RGB, imageSize().
    QImage image() const;
    // The inpainting mask, RGB, imageSize(): white repaints, black keeps.
    QImage mask() const;
    bool hasMask() const;  // any pixel masked
    void setMaskEditing(bool on);
    bool maskEditing() const { return maskEditing_; }
    void setMaskShown(bool on);  // the overlay (mask editing shows it too)

    void setTool(Tool tool);
    Tool tool() const { return tool_; }
    void setBrushSize(int px);
    int brushSize() const { return brushSize_; }
    void setColor(const QColor& color);
    QColor color() const { return color_; }
    void setOpacity(double opacity);  // 0..1
    double opacity() const { return opacity_; }

    // Replaces the picture (scaled to imageSize(), keeping the aspect, on white) and clears the
    // paint; undoable.
    void setPicture(const QImage& image);
    bool canUndo() const { return !undo_.isEmpty(); }
    bool canRedo() const { return !redo_.isEmpty(); }

    // Maps a widget position to image pixels.
    QPointF toImage(const QPointF& widget_pos) const;
    QRectF imageRect() const;  // where the picture is drawn in the widget

  public Q_SLOTS:
    void undo();
    void redo();
    void clear();  // white paper, no paint, no mask; undoable
    // A mask from an image (white repaints, black keeps: grey levels from 128 up are masked, as
    // the engine reads a mask), placed as setPicture places a picture; undoable.
    void setMask(const QImage& mask);
    void clearMask();   // undoable
    void invertMask();  // undoable
    // Outpainting: the canvas grows by these margins in pixels, the sketch flattened onto the
    // picture and its edge pixels repeated into the new area, which becomes the mask (added to
    // the mask there was). Clears undo, as a size change does.
    void extend(int left, int top, int right, int bottom);
    void pasteFromClipboard();

  Q_SIGNALS:
    void strokeFinished();  // a stroke, fill, clear, undo or redo changed the sketch
    void undoStateChanged();
    void message(const QString& text);

  protected:
    void paintEvent(QPaintEvent*) override;
    void mousePressEvent(QMouseEvent*) override;
    void mouseMoveEvent(QMouseEvent*) override;
    void mouseReleaseEvent(QMouseEvent*) override;
    void tabletEvent(QTabletEvent*) override;
    void dragEnterEvent(QDragEnterEvent*) override;
    void dropEvent(QDropEvent*) override;

  private:
    struct State {
        QImage picture, paint, mask;
    };
    void pushUndo();
    void begin(const QPointF& pos, double pressure);
    void extend(const QPointF& pos, double pressure);
    void end();
    void fillAt(const QPointF& pos);
    QImage composited() const;
    State state() const { return {picture_, paint_, mask_}; }
    void restore(const State& s);
    QImage& target() { return maskEditing_ ? mask_ : paint_; }  // what the tools change

    QImage picture_;  // RGB32, opaque
    QImage paint_;    // ARGB32 premultiplied
    QImage stroke_;   // the stroke in progress, full alpha; merged with opacity_ at its end
    QImage mask_;     // ARGB32 premultiplied: opaque kMaskColour where masked
    bool maskEditing_ = false;
    bool maskShown_ = false;
    bool drawing_ = false;
    QPointF last_;
    Tool tool_ = Tool::Brush;
    int brushSize_ = 12;
    QColor color_ = Qt::black;
    double opacity_ = 1.0;
    QList<State> undo_, redo_;
    static constexpr int kMaxUndo = 50;
};

}  // namespace sds::ui
