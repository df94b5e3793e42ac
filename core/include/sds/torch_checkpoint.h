#pragma once
// PyTorch checkpoints (what torch.save writes since PyTorch 1.6: `.ckpt`, `.pt`, `.bin`) read
// without running them, and without LibTorch (the fuzz target builds this file alone).
//
// Such a file is a zip archive (stored, not compressed) holding NAME/data.pkl, a pickle of the
// saved object, and NAME/data/KEY, the raw bytes of each storage. Unpickling in Python can run
// any code the file names; here the pickle is only interpreted: opcodes build plain values
// (dicts, lists, tuples, numbers, strings), a tensor is recognised by torch's own rebuild
// functions (torch._utils._rebuild_tensor_v2 and friends) over a storage, and anything else the
// file names (a class, a function such as os.system) becomes an inert placeholder that is never
// called. The tensors are those of the dict under "state_dict" (followed while nested, as
// diffusers does) or "string_to_param" (A1111's embeddings), else of the top-level dict; other
// entries are ignored.
#include <cstddef>
#include <cstdint>
#include <string>

#include "sds/safetensors_header.h"

namespace sds {

// Whether the bytes start like a zip archive (a local file header).
bool looks_like_zip(const uint8_t* data, size_t size);

// Whether the bytes are a checkpoint in torch.save's legacy format (before PyTorch 1.6): a pickle
// of torch's magic number, then tar-like records. SD Studio does not read that format.
bool is_legacy_torch_file(const uint8_t* data, size_t size);

// The tensors of a torch.save zip archive (`size` bytes at `data`) as a header whose offsets
// count from the start of the file (data_start 0). A tensor stored as a strided view gets its
// strides (in elements); a contiguous one has none. Throws sds::FileError naming `path` and the
// problem for anything malformed, compressed, encrypted, big-endian or without tensors.
SafeTensorsHeader parse_torch_checkpoint(const uint8_t* data, size_t size, const std::string& path);

}  // namespace sds
