"""A1111's prompt syntax in Python, the reference the CLI's prompts are checked against.

Written for the tests from what A1111 documents and does (its prompt_parser's
parse_prompt_attention, sd_hijack_clip's tokenize_line and process_tokens, sd_emphasis's
"Original" and "No norm", get_multicond_prompt_list and reconstruct_multicond_batch): emphasis
brackets, BREAK, chunks of 75 tokens with the comma backtrack of 20, each chunk encoded on its
own by transformers' text encoder and weighed; AND, and the parts' weights.
"""
import re

import torch

_PIECE = re.compile(r"\\[()\[\]\\]|\\|[(\[)\]]|:\s*[+-]?[\d.]+\s*\)|:|[^\\()\[\]:]+")
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_AND = re.compile(r"\bAND\b")
_PART_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")
CHUNK = 75
COMMA_BACKTRACK = 20


def parse(text):
    """[(text, weight, is_break)], equal weights joined."""
    out = []  # [text, weight, is_break]
    opened = {"(": [], "[": []}

    def scale(start, factor):
        for piece in out[start:]:
            if not piece[2]:
                piece[1] *= factor

    for piece in _PIECE.findall(text):
        if piece[0] == "\\":
            out.append([piece[1:], 1.0, False])
        elif piece in ("(", "["):
            opened[piece].append(len(out))
        elif piece[0] == ":" and piece[-1] == ")" and len(piece) > 1 and opened["("]:
            scale(opened["("].pop(), float(piece[1:-1]))
        elif piece == ")" and opened["("]:
            scale(opened["("].pop(), 1.1)
        elif piece == "]" and opened["["]:
            scale(opened["["].pop(), 1 / 1.1)
        else:
            for i, part in enumerate(_BREAK.split(piece)):
                if i:
                    out.append(["", 1.0, True])
                out.append([part, 1.0, False])
    for start in opened["("]:
        scale(start, 1.1)
    for start in opened["["]:
        scale(start, 1 / 1.1)
    joined = []
    for piece in out or [["", 1.0, False]]:
        if joined and not piece[2] and not joined[-1][2] and joined[-1][1] == piece[1]:
            joined[-1][0] += piece[0]
        else:
            joined.append(piece)
    return [tuple(p) for p in joined]


def chunks(tokenizer, text):
    """[(ids, weights)] of 77 each: start, 75 tokens (end markers after them), end; the
    tokenizer's padding after the first end marker."""
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    start, end, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    done = []
    state = {"ids": [], "weights": [], "comma": -1}

    def close():
        ids, weights = state["ids"], state["weights"]
        full = [start] + ids + [end] * (CHUNK + 1 - len(ids))
        first_end = full.index(end, 1)
        full = full[:first_end + 1] + [pad] * (len(full) - first_end - 1)
        done.append((full, [1.0] + weights + [1.0] * (CHUNK + 1 - len(weights))))
        state.update(ids=[], weights=[], comma=-1)

    for piece, weight, is_break in parse(text):
        if is_break:
            close()
            continue
        for token in tokenizer(piece, add_special_tokens=False).input_ids:
            ids = state["ids"]
            if token == comma:
                state["comma"] = len(ids)
            elif len(ids) == CHUNK and state["comma"] >= 0 and \
                    CHUNK - state["comma"] <= COMMA_BACKTRACK:
                keep = state["comma"] + 1
                moved = ids[keep:], state["weights"][keep:]
                state["ids"], state["weights"] = ids[:keep], state["weights"][:keep]
                close()
                state["ids"], state["weights"] = list(moved[0]), list(moved[1])
            if len(state["ids"]) == CHUNK:
                close()
            state["ids"].append(token)
            state["weights"].append(weight)
    if state["ids"] or not done:
        close()
    return done


def weigh(z, weights, norm):
    w = torch.tensor(weights, dtype=torch.float32).reshape(1, -1, 1)
    weighed = z * w
    return weighed * (z.mean() / weighed.mean()) if norm else weighed


@torch.no_grad()
def encode(text_encoder, tokenizer, text, clip_skip=0, norm=True):
    """SD 1.x/2.x: [1, 77 * chunks, hidden], each chunk encoded alone (clip skip as diffusers:
    the state clip_skip layers back, through the final layer norm) and weighed."""
    zs = []
    for ids, weights in chunks(tokenizer, text):
        out = text_encoder(torch.tensor([ids]), output_hidden_states=True)
        z = out.last_hidden_state if clip_skip == 0 else \
            text_encoder.final_layer_norm(out.hidden_states[-(clip_skip + 1)])
        zs.append(weigh(z, weights, norm))
    return torch.cat(zs, 1)


@torch.no_grad()
def encode_xl(pipe, text, norm=True):
    """SDXL: both encoders' second-to-last states side by side, each weighed on its own, and
    the second encoder's projected pooled output of the first chunk."""
    parts, pooled = [], None
    for (ids, w), (ids2, w2) in zip(chunks(pipe.tokenizer, text), chunks(pipe.tokenizer_2, text)):
        one = pipe.text_encoder(torch.tensor([ids]), output_hidden_states=True)
        two = pipe.text_encoder_2(torch.tensor([ids2]), output_hidden_states=True)
        parts.append(torch.cat([weigh(one.hidden_states[-2], w, norm),
                                weigh(two.hidden_states[-2], w2, norm)], -1))
        if pooled is None:
            pooled = two.text_embeds
    return torch.cat(parts, 1), pooled


def split_and(prompt):
    """A composable prompt's parts: [(text, weight)]."""
    parts = []
    for part in _AND.split(prompt):
        text, weight = _PART_WEIGHT.search(part).groups()
        parts.append((text, float(weight) if weight is not None else 1.0))
    return parts


def pad_to_longest(conds):
    """The parts' encoded prompts [1, n, d] padded to the longest with their last vector."""
    longest = max(c.shape[1] for c in conds)
    return [torch.cat([c, c[:, -1:].repeat(1, longest - c.shape[1], 1)], 1) for c in conds]
