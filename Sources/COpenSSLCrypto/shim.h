// OpenSSL's libcrypto, for SHA-256 alone: its low-level `SHA256_CTX` lives on the caller's
// stack, where swift-crypto's `SHA256` allocates a context object per hash (see
// `TreeHash`). The low-level calls are deprecated in OpenSSL 3 in favour of EVP, which
// allocates too; they remain supported through 3.x, and OpenSSL's own `SHA256()` uses them.
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>
