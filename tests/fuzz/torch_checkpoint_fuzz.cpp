// libFuzzer target: the torch.save archive reader (zip directory and pickle interpreter) must
// reject any input with sds::FileError and never crash, hang, leak or read out of bounds (run
// under ASan + UBSan).
#include <cstddef>
#include <cstdint>

#include "sds/error.h"
#include "sds/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const auto header = sds::parse_torch_checkpoint(data, size, "fuzz.ckpt");
        // A file that passes must describe tensors that lie inside it.
        for (const auto& t : header.tensors) {
            if (t.end > size || t.begin > t.end ||
                (!t.strides.empty() && t.strides.size() != t.shape.size())) {
                __builtin_trap();
            }
        }
    } catch (const sds::FileError&) {
    }
    return 0;
}
