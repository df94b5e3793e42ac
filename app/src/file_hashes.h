#pragma once
// A1111's hashes of the files a generation was made with (sds::A1111Files). Each file's sha256
// is kept in hashes.json in the studio's data folder by the file's path, size and time, so that
// a checkpoint of gigabytes is read once.
#include <QString>

#include <string>

#include "sds/generation_request.h"

namespace sds::app {

// The sha256 of a file's bytes (64 hex digits), or with `after_header` of a .safetensors file's
// bytes after its header (kohya-ss's hash, which A1111 uses for LoRAs). From the cache where
// the file's size and modification time are those cached. FileError naming the file where it
// cannot be read. Safe to call from several threads.
std::string file_sha256(const QString& file, bool after_header = false);

// The files of a generation: the model (a checkpoint file's name and hash; a folder's name),
// a VAE of its own (`vae`, empty for the model's), the request's LoRAs and textual inversion
// embeddings.
A1111Files a1111_files(const GenerationRequest& request, const QString& model,
                       const QString& vae = {});

// Where the hashes are kept: hashes.json in StudioSettings' data folder.
QString hash_cache_file();

}  // namespace sds::app
