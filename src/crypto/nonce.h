/* nonce.h - random nonces/IVs for every written value, cheap enough for the hot path.
 *
 * Bytes come from OpenSSL's CSPRNG (RAND_bytes), fetched in blocks into a per-thread buffer so
 * that one ~600 ns RAND_bytes call serves dozens of values; every byte is handed out once.
 * A forked child discards the buffer it inherited (pthread_atfork), so parent and child never
 * share nonces. Nonces are public values; nothing here is secret. Thread-safe, lock-free.
 */
#ifndef ETCDSEAL_CRYPTO_NONCE_H
#define ETCDSEAL_CRYPTO_NONCE_H

#include <stddef.h>
#include <stdint.h>

/* Fills dst with n random bytes. Returns 0, or -1 when the CSPRNG fails. */
int crypto_nonce(uint8_t *dst, size_t n);

#endif
