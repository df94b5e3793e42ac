// libFuzzer target: the safetensors header parser must reject any input with sds::FileError
// and never crash, hang or read out of bounds (run under ASan + UBSan).
#include <cstddef>
#include <cstdint>

#include "sds/error.h"
#include "sds/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const auto header = sds::parse_safetensors(data, size, "fuzz.safetensors");
        // A file that passes must describe tensors that lie inside it.
        for (const auto& t : header.tensors) {
            if (header.data_start + t.end > size || t.begin > t.end) {
                __builtin_trap();
            }
        }
    } catch (const sds::FileError&) {
    }
    return 0;
}
