#include "util/error.h"

#include <cstring>

namespace vlmforge {

std::string errno_message(int err) {
  char buf[256];
  // GNU strerror_r returns a pointer that may or may not be buf.
  const char* msg = strerror_r(err, buf, sizeof buf);
  return msg;
}

}  // namespace vlmforge
