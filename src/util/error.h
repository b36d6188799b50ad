#pragma once
// Errors carry a message a user can act on: what failed, where (file, tensor, line), and what to do.
#include <stdexcept>
#include <string>

namespace vlmforge {

// Bad input or a failed operation; the CLI prints what() and exits non-zero.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Wrong usage of a command (bad flag values, conflicting options): exit code 2.
class UsageError : public Error {
 public:
  using Error::Error;
};

// Work given up because whoever asked for it no longer wants it (a client that hung up, a server
// shutting down): not a fault of the input.
class Cancelled : public Error {
 public:
  using Error::Error;
};

// Describes errno for a message, e.g. "No space left on device".
std::string errno_message(int err);

}  // namespace vlmforge
