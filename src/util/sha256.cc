#include "util/sha256.h"

#include <openssl/evp.h>

#include <memory>

#include "util/error.h"

namespace vlmforge {

Sha256Digest sha256(std::initializer_list<std::span<const uint8_t>> parts) {
  const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  Sha256Digest digest{};
  unsigned int length = 0;
  bool ok = ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1;
  for (const auto& part : parts) ok = ok && EVP_DigestUpdate(ctx.get(), part.data(), part.size()) == 1;
  ok = ok && EVP_DigestFinal_ex(ctx.get(), digest.data(), &length) == 1 && length == digest.size();
  if (!ok) throw Error("SHA-256 failed in OpenSSL's libcrypto (out of memory?)");
  return digest;
}

}  // namespace vlmforge
