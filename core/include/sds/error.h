#pragma once
// Errors the engine raises. Every message names the file (and the field or tensor) and says
// what is wrong in words a user can act on. The engine never aborts the process.
#include <stdexcept>
#include <string>

namespace sds {

class Error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// A file that cannot be read, or whose contents are malformed.
class FileError : public Error {
  public:
    using Error::Error;
};

// A model folder whose parts are missing or disagree with each other.
class ModelError : public Error {
  public:
    using Error::Error;
};

// A device or precision that is not available here.
class DeviceError : public Error {
  public:
    using Error::Error;
};

}  // namespace sds
