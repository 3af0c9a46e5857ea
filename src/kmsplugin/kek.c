/* kek.c - what every KEK backend shares: the size checks around encrypt/decrypt (so a backend
 * only sees inputs that can be valid), reading a private key/PIN file, and the percent-encoding
 * used inside key_ids. */
#include "kmsplugin/kek.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <grpc/status.h>

#define PRIVATE_FILE_MAX 4096

int kmsplugin_kek_encrypt(kmsplugin_kek *k, buf_t *out, const uint8_t *pt, size_t pt_len,
                          es_error *err)
{
    if (pt_len == 0 || pt_len > KMSPLUGIN_PLAINTEXT_MAX)
        return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT,
                            "plaintext must be 1..%d bytes, got %zu", KMSPLUGIN_PLAINTEXT_MAX,
                            pt_len);
    return k->ops->encrypt(k, out, pt, pt_len, err);
}

int kmsplugin_kek_decrypt(kmsplugin_kek *k, buf_t *out, const char *key_id, const uint8_t *ct,
                          size_t ct_len, es_error *err)
{
    if (!key_id || !*key_id)
        return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT, "key_id is empty");
    if (strlen(key_id) > KMSPLUGIN_KEY_ID_MAX)
        return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT, "key_id longer than %d bytes",
                            KMSPLUGIN_KEY_ID_MAX);
    if (ct_len < KMSPLUGIN_CT_OVERHEAD + 1 || ct_len > KMSPLUGIN_CIPHERTEXT_MAX)
        return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT,
                            "ciphertext length %zu outside %d..%d", ct_len,
                            KMSPLUGIN_CT_OVERHEAD + 1, KMSPLUGIN_CIPHERTEXT_MAX);
    if (ct[0] != KMSPLUGIN_CT_VERSION)
        return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT,
                            "ciphertext format version %u is not %u", ct[0], KMSPLUGIN_CT_VERSION);
    return k->ops->decrypt(k, out, key_id, ct, ct_len, err);
}

int kmsplugin_kek_health(kmsplugin_kek *k, es_error *err)
{
    return k->ops->health(k, err);
}

const char *kmsplugin_kek_key_id(const kmsplugin_kek *k)
{
    return k->key_id;
}

void kmsplugin_kek_free(kmsplugin_kek *k)
{
    if (k)
        k->ops->destroy(k);
}

int kmsplugin_read_private_file(secret_t **out, const char *path, const char *what, es_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return es_error_set(err, GRPC_STATUS_FAILED_PRECONDITION, "%s %s: %s", what, path,
                            strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return es_error_set(err, GRPC_STATUS_FAILED_PRECONDITION, "%s %s: %s", what, path,
                            strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return es_error_set(err, GRPC_STATUS_FAILED_PRECONDITION, "%s %s is not a regular file",
                            what, path);
    }
    if (st.st_mode & 077) {
        close(fd);
        return es_error_set(err, GRPC_STATUS_FAILED_PRECONDITION,
                            "%s %s has mode %04o: it must be readable by its owner only "
                            "(chmod 0600)",
                            what, path, (unsigned)(st.st_mode & 07777));
    }
    if (st.st_size > PRIVATE_FILE_MAX) {
        close(fd);
        return es_error_set(err, GRPC_STATUS_FAILED_PRECONDITION, "%s %s is larger than %d bytes",
                            what, path, PRIVATE_FILE_MAX);
    }
    secret_t *tmp = secret_new(NULL, PRIVATE_FILE_MAX);
    if (!tmp) {
        close(fd);
        return es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s: out of memory", what);
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, tmp->bytes + n, PRIVATE_FILE_MAX - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            secret_free(tmp);
            return es_error_set(err, GRPC_STATUS_FAILED_PRECONDITION, "%s %s: %s", what, path,
                                strerror(e));
        }
        if (r == 0 || (n += (size_t)r) == PRIVATE_FILE_MAX)
            break;
    }
    close(fd);
    secret_t *s = secret_new(tmp->bytes, n);
    secret_free(tmp);
    if (!s)
        return es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s: out of memory", what);
    *out = s;
    return 0;
}

static int is_plain(uint8_t c)
{
    return c > 0x20 && c < 0x7f && c != '/' && c != '%';
}

int kmsplugin_append_escaped(buf_t *b, const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (is_plain(s[i])) {
            if (buf_append_byte(b, s[i]) != 0)
                return -1;
        } else if (buf_appendf(b, "%%%02X", s[i]) != 0) {
            return -1;
        }
    }
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int kmsplugin_unescape(char *out, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            c = hi * 16 + lo;
            i += 2;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}
