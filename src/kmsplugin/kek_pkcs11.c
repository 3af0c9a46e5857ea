/* kek_pkcs11.c - the production KEK backend: an AES key object in a PKCS#11 token (SoftHSM2, an
 * HSM, a cloud HSM's PKCS#11 library). Wrapping is CKM_AES_GCM inside the token (C_EncryptInit/
 * C_Encrypt with a fresh 12-byte IV per call and the key_id as AAD); the key never leaves it.
 *
 * One module load, one logged-in session for the process (the plugin serves calls on one
 * thread). A key is named by its label plus CKA_ID (or, when the key has no CKA_ID, its
 * CKA_CHECK_VALUE), so the key_id survives restarts and changes when the key label - or the key
 * behind it - changes. Keys are looked up once and cached by key_id; a Decrypt for a key_id not
 * yet cached searches the token for the label and identity the key_id records. A session that
 * the token dropped (restart, device error) is reopened once per call before giving up.
 * One pkcs11 backend per process: destroying it finalizes the module.
 */
#include "kmsplugin/kek.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/status.h>
#include <openssl/rand.h>
#include <p11-kit-1/p11-kit/pkcs11.h>
#include <sodium.h>

#include "base/log.h"

#define LABEL_MAX 256
#define IDENT_MAX 64
#define FIND_MAX 16

struct p11_key {
    char label[LABEL_MAX];
    uint8_t ident[IDENT_MAX]; /* CKA_ID, or CKA_CHECK_VALUE when kcv */
    size_t ident_len;
    int kcv;
    CK_OBJECT_HANDLE h;
    char key_id[KMSPLUGIN_KEY_ID_MAX + 1];
};

struct kek_p11 {
    kmsplugin_kek base; /* first: the public part */
    void *dl;
    CK_FUNCTION_LIST_PTR f;
    int initialized; /* we called C_Initialize successfully: C_Finalize on destroy */
    CK_SLOT_ID slot;
    char token_label[33];
    secret_t *pin;
    CK_SESSION_HANDLE s;
    int have_session;
    struct p11_key *keys; /* keys[0] is the current key */
    size_t n_keys, cap_keys;
};

static const char *rv_name(CK_RV rv)
{
    switch (rv) {
    case CKR_OK:
        return "CKR_OK";
    case CKR_ARGUMENTS_BAD:
        return "CKR_ARGUMENTS_BAD";
    case CKR_DEVICE_ERROR:
        return "CKR_DEVICE_ERROR";
    case CKR_DEVICE_REMOVED:
        return "CKR_DEVICE_REMOVED";
    case CKR_ENCRYPTED_DATA_INVALID:
        return "CKR_ENCRYPTED_DATA_INVALID";
    case CKR_ENCRYPTED_DATA_LEN_RANGE:
        return "CKR_ENCRYPTED_DATA_LEN_RANGE";
    case CKR_FUNCTION_FAILED:
        return "CKR_FUNCTION_FAILED";
    case CKR_GENERAL_ERROR:
        return "CKR_GENERAL_ERROR";
    case CKR_KEY_HANDLE_INVALID:
        return "CKR_KEY_HANDLE_INVALID";
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
        return "CKR_KEY_FUNCTION_NOT_PERMITTED";
    case CKR_KEY_TYPE_INCONSISTENT:
        return "CKR_KEY_TYPE_INCONSISTENT";
    case CKR_MECHANISM_INVALID:
        return "CKR_MECHANISM_INVALID";
    case CKR_MECHANISM_PARAM_INVALID:
        return "CKR_MECHANISM_PARAM_INVALID";
    case CKR_OBJECT_HANDLE_INVALID:
        return "CKR_OBJECT_HANDLE_INVALID";
    case CKR_PIN_INCORRECT:
        return "CKR_PIN_INCORRECT";
    case CKR_PIN_LOCKED:
        return "CKR_PIN_LOCKED";
    case CKR_SESSION_CLOSED:
        return "CKR_SESSION_CLOSED";
    case CKR_SESSION_HANDLE_INVALID:
        return "CKR_SESSION_HANDLE_INVALID";
    case CKR_SLOT_ID_INVALID:
        return "CKR_SLOT_ID_INVALID";
    case CKR_TOKEN_NOT_PRESENT:
        return "CKR_TOKEN_NOT_PRESENT";
    case CKR_TOKEN_NOT_RECOGNIZED:
        return "CKR_TOKEN_NOT_RECOGNIZED";
    case CKR_USER_NOT_LOGGED_IN:
        return "CKR_USER_NOT_LOGGED_IN";
    case CKR_CRYPTOKI_NOT_INITIALIZED:
        return "CKR_CRYPTOKI_NOT_INITIALIZED";
    case CKR_TEMPLATE_INCONSISTENT:
        return "CKR_TEMPLATE_INCONSISTENT";
    case CKR_ATTRIBUTE_VALUE_INVALID:
        return "CKR_ATTRIBUTE_VALUE_INVALID";
    default:
        return "CKR_(other)";
    }
}

static int p11_fail(es_error *err, int code, const char *what, CK_RV rv)
{
    return es_error_set(err, code, "pkcs11: %s: %s (0x%lx)", what, rv_name(rv), (unsigned long)rv);
}

/* The session is gone or unusable: worth one reopen. */
static int session_lost(CK_RV rv)
{
    return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED ||
           rv == CKR_USER_NOT_LOGGED_IN || rv == CKR_DEVICE_REMOVED || rv == CKR_DEVICE_ERROR ||
           rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_KEY_HANDLE_INVALID ||
           rv == CKR_OBJECT_HANDLE_INVALID;
}

static void trim_label(char *out, const unsigned char *in, size_t n)
{
    while (n > 0 && (in[n - 1] == ' ' || in[n - 1] == '\0'))
        n--;
    memcpy(out, in, n);
    out[n] = '\0';
}

static int find_slot(struct kek_p11 *p, const char *token_label, long slot, es_error *err)
{
    if (!token_label) {
        if (slot < 0)
            return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT,
                                "pkcs11: give --token-label or --slot");
        p->slot = (CK_SLOT_ID)slot;
        CK_TOKEN_INFO ti;
        CK_RV rv = p->f->C_GetTokenInfo(p->slot, &ti);
        if (rv != CKR_OK)
            return p11_fail(err, GRPC_STATUS_FAILED_PRECONDITION, "C_GetTokenInfo(--slot)", rv);
        trim_label(p->token_label, ti.label, sizeof ti.label);
        return 0;
    }
    CK_ULONG n = 0;
    CK_RV rv = p->f->C_GetSlotList(CK_TRUE, NULL, &n);
    if (rv != CKR_OK)
        return p11_fail(err, GRPC_STATUS_FAILED_PRECONDITION, "C_GetSlotList", rv);
    CK_SLOT_ID *ids = calloc(n ? n : 1, sizeof *ids);
    if (!ids)
        return es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "pkcs11: out of memory");
    rv = p->f->C_GetSlotList(CK_TRUE, ids, &n);
    int found = 0;
    for (CK_ULONG i = 0; rv == CKR_OK && i < n; i++) {
        CK_TOKEN_INFO ti;
        char lbl[33];
        if (p->f->C_GetTokenInfo(ids[i], &ti) != CKR_OK)
            continue;
        trim_label(lbl, ti.label, sizeof ti.label);
        if (strcmp(lbl, token_label) == 0) {
            if (found++ == 0)
                p->slot = ids[i];
        }
    }
    free(ids);
    if (rv != CKR_OK)
        return p11_fail(err, GRPC_STATUS_FAILED_PRECONDITION, "C_GetSlotList", rv);
    if (found == 0)
        return es_error_set(err, GRPC_STATUS_FAILED_PRECONDITION,
                            "pkcs11: no token labelled \"%s\" (--token-label)", token_label);
    if (found > 1)
        return es_error_set(err, GRPC_STATUS_FAILED_PRECONDITION,
                            "pkcs11: %d tokens are labelled \"%s\"; use --slot", found,
                            token_label);
    snprintf(p->token_label, sizeof p->token_label, "%s", token_label);
    return 0;
}

static void close_session(struct kek_p11 *p)
{
    if (p->have_session)
        p->f->C_CloseSession(p->s);
    p->have_session = 0;
}

static int open_session(struct kek_p11 *p, CK_FLAGS extra, es_error *err)
{
    close_session(p);
    CK_RV rv = p->f->C_OpenSession(p->slot, CKF_SERIAL_SESSION | extra, NULL, NULL, &p->s);
    if (rv != CKR_OK)
        return p11_fail(err, GRPC_STATUS_UNAVAILABLE, "C_OpenSession", rv);
    p->have_session = 1;
    rv = p->f->C_Login(p->s, CKU_USER, p->pin->bytes, p->pin->len);
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        close_session(p);
        return p11_fail(err,
                        rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED
                            ? GRPC_STATUS_PERMISSION_DENIED
                            : GRPC_STATUS_UNAVAILABLE,
                        "C_Login (--pin-file)", rv);
    }
    return 0;
}

/* Reads CKA_ID (or CKA_CHECK_VALUE) of h into k. */
static int key_identity(struct kek_p11 *p, CK_OBJECT_HANDLE h, struct p11_key *k, es_error *err)
{
    CK_ATTRIBUTE a = {CKA_ID, k->ident, sizeof k->ident};
    CK_RV rv = p->f->C_GetAttributeValue(p->s, h, &a, 1);
    if (rv == CKR_OK && a.ulValueLen != CK_UNAVAILABLE_INFORMATION && a.ulValueLen > 0) {
        k->ident_len = a.ulValueLen;
        k->kcv = 0;
        return 0;
    }
    CK_ATTRIBUTE c = {CKA_CHECK_VALUE, k->ident, sizeof k->ident};
    rv = p->f->C_GetAttributeValue(p->s, h, &c, 1);
    if (rv == CKR_OK && c.ulValueLen != CK_UNAVAILABLE_INFORMATION && c.ulValueLen > 0) {
        k->ident_len = c.ulValueLen;
        k->kcv = 1;
        return 0;
    }
    return es_error_set(err, GRPC_STATUS_FAILED_PRECONDITION,
                        "pkcs11: key \"%s\" has neither CKA_ID nor CKA_CHECK_VALUE; give it a "
                        "CKA_ID so its key_id is stable",
                        k->label);
}

static int build_key_id(struct kek_p11 *p, struct p11_key *k, es_error *err)
{
    buf_t b = BUF_INIT;
    char hex[2 * IDENT_MAX + 1];
    sodium_bin2hex(hex, sizeof hex, k->ident, k->ident_len);
    int rc = buf_appendf(&b, "pkcs11:");
    rc =
        rc || kmsplugin_append_escaped(&b, (const uint8_t *)p->token_label, strlen(p->token_label));
    rc = rc || buf_append_byte(&b, '/');
    rc = rc || kmsplugin_append_escaped(&b, (const uint8_t *)k->label, strlen(k->label));
    rc = rc || buf_appendf(&b, "/%s%s", k->kcv ? "kcv-" : "", hex);
    if (rc == 0 && b.len > KMSPLUGIN_KEY_ID_MAX)
        rc = es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "pkcs11: key_id for key \"%s\" would exceed %d bytes", k->label,
                          KMSPLUGIN_KEY_ID_MAX);
    else if (rc != 0)
        rc = es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "pkcs11: out of memory");
    else
        memcpy(k->key_id, b.data, b.len + 1);
    buf_free(&b);
    return rc;
}

/* Finds the AES secret key labelled k->label; when want_ident, the one whose identity matches
 * k->ident/kcv; otherwise exactly one must exist and its identity is filled in. Returns 0, -1
 * with err, or 1 when no such key exists (err filled with NOT_FOUND). */
static int find_key(struct kek_p11 *p, struct p11_key *k, int want_ident, CK_RV *rv_out,
                    es_error *err)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_AES;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_KEY_TYPE, &kt, sizeof kt},
        {CKA_LABEL, k->label, strlen(k->label)},
    };
    CK_OBJECT_HANDLE hs[FIND_MAX];
    CK_ULONG n = 0;
    CK_RV rv = p->f->C_FindObjectsInit(p->s, tmpl, 3);
    if (rv == CKR_OK) {
        rv = p->f->C_FindObjects(p->s, hs, FIND_MAX, &n);
        CK_RV rv2 = p->f->C_FindObjectsFinal(p->s);
        if (rv == CKR_OK)
            rv = rv2;
    }
    *rv_out = rv;
    if (rv != CKR_OK)
        return p11_fail(err, GRPC_STATUS_UNAVAILABLE, "C_FindObjects", rv);
    if (!want_ident) {
        if (n == 0) {
            es_error_set(err, GRPC_STATUS_NOT_FOUND,
                         "pkcs11: no AES key labelled \"%s\" in token \"%s\"", k->label,
                         p->token_label);
            return 1;
        }
        if (n > 1)
            return es_error_set(err, GRPC_STATUS_FAILED_PRECONDITION,
                                "pkcs11: %lu AES keys are labelled \"%s\"; labels must be unique",
                                (unsigned long)n, k->label);
        k->h = hs[0];
        return key_identity(p, hs[0], k, err);
    }
    for (CK_ULONG i = 0; i < n; i++) {
        struct p11_key c;
        memcpy(c.label, k->label, sizeof c.label);
        if (key_identity(p, hs[i], &c, NULL) != 0)
            continue;
        if (c.kcv == k->kcv && c.ident_len == k->ident_len &&
            memcmp(c.ident, k->ident, c.ident_len) == 0) {
            k->h = hs[i];
            return 0;
        }
    }
    es_error_set(err, GRPC_STATUS_NOT_FOUND, "pkcs11: key \"%s\" with that id is not in token",
                 k->label);
    return 1;
}

static int add_key(struct kek_p11 *p, const struct p11_key *k)
{
    if (p->n_keys == p->cap_keys) {
        size_t cap = p->cap_keys ? 2 * p->cap_keys : 4;
        struct p11_key *nk = realloc(p->keys, cap * sizeof *nk);
        if (!nk)
            return -1;
        p->keys = nk;
        p->cap_keys = cap;
    }
    p->keys[p->n_keys++] = *k;
    return 0;
}

/* After a reopen: object handles may have changed; look every cached key up again. */
static int refind_keys(struct kek_p11 *p, es_error *err)
{
    for (size_t i = 0; i < p->n_keys; i++) {
        CK_RV rv;
        if (find_key(p, &p->keys[i], 1, &rv, err) != 0) {
            if (i == 0)
                return -1;
            p->keys[i].h = CK_INVALID_HANDLE; /* an old key vanished: lookups fail later */
        }
    }
    return 0;
}

static int reopen(struct kek_p11 *p, es_error *err)
{
    log_warn("pkcs11 session lost; reopening|token=\"%s\"", p->token_label);
    if (open_session(p, 0, err) != 0)
        return -1;
    return refind_keys(p, err);
}

static int gcm_op(struct kek_p11 *p, int enc, CK_OBJECT_HANDLE h, const uint8_t *iv,
                  const char *aad, const uint8_t *in, size_t in_len, uint8_t *out,
                  CK_ULONG *out_len, CK_RV *rv_out)
{
    CK_GCM_PARAMS gp;
    memset(&gp, 0, sizeof gp);
    gp.pIv = (CK_BYTE_PTR)iv;
    gp.ulIvLen = KMSPLUGIN_IV_BYTES;
    gp.ulIvBits = KMSPLUGIN_IV_BYTES * 8;
    gp.pAAD = (CK_BYTE_PTR)aad;
    gp.ulAADLen = strlen(aad);
    gp.ulTagBits = KMSPLUGIN_TAG_BYTES * 8;
    CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof gp};
    CK_RV rv = enc ? p->f->C_EncryptInit(p->s, &m, h) : p->f->C_DecryptInit(p->s, &m, h);
    if (rv == CKR_OK)
        rv = enc ? p->f->C_Encrypt(p->s, (CK_BYTE_PTR)in, in_len, out, out_len)
                 : p->f->C_Decrypt(p->s, (CK_BYTE_PTR)in, in_len, out, out_len);
    *rv_out = rv;
    return rv == CKR_OK ? 0 : -1;
}

static int p11_encrypt(kmsplugin_kek *k, buf_t *out, const uint8_t *pt, size_t pt_len,
                       es_error *err)
{
    struct kek_p11 *p = (struct kek_p11 *)k;
    size_t total = KMSPLUGIN_CT_OVERHEAD + pt_len;
    if (buf_reserve(out, total) != 0)
        return es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "pkcs11: out of memory");
    uint8_t *c = out->data + out->len;
    c[0] = KMSPLUGIN_CT_VERSION;
    if (RAND_bytes(c + 1, KMSPLUGIN_IV_BYTES) != 1)
        return es_error_set(err, GRPC_STATUS_UNAVAILABLE, "pkcs11: no random IV");
    CK_RV rv = CKR_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        CK_ULONG n = pt_len + KMSPLUGIN_TAG_BYTES;
        if (attempt == 1 && reopen(p, err) != 0)
            return -1;
        if (p->have_session && gcm_op(p, 1, p->keys[0].h, c + 1, k->key_id, pt, pt_len,
                                      c + 1 + KMSPLUGIN_IV_BYTES, &n, &rv) == 0) {
            if (n != pt_len + KMSPLUGIN_TAG_BYTES)
                return es_error_set(err, GRPC_STATUS_INTERNAL,
                                    "pkcs11: C_Encrypt returned %lu bytes, want %zu",
                                    (unsigned long)n, pt_len + KMSPLUGIN_TAG_BYTES);
            out->len += total;
            return 0;
        }
        if (p->have_session && !session_lost(rv))
            break;
    }
    return p11_fail(err, GRPC_STATUS_UNAVAILABLE, "C_Encrypt (CKM_AES_GCM)", rv);
}

/* Parses "pkcs11:<token>/<label>/<hex|kcv-hex>" into k (label, ident). 0 or -1. */
static int parse_key_id(struct kek_p11 *p, const char *key_id, struct p11_key *k)
{
    static const char prefix[] = "pkcs11:";
    if (strncmp(key_id, prefix, sizeof prefix - 1) != 0)
        return -1;
    const char *tok = key_id + sizeof prefix - 1;
    const char *s1 = strchr(tok, '/');
    const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    if (!s2 || strchr(s2 + 1, '/'))
        return -1;
    char token[sizeof p->token_label];
    if (kmsplugin_unescape(token, sizeof token, tok, (size_t)(s1 - tok)) != 0 ||
        strcmp(token, p->token_label) != 0)
        return -1;
    memset(k, 0, sizeof *k);
    if (kmsplugin_unescape(k->label, sizeof k->label, s1 + 1, (size_t)(s2 - s1 - 1)) != 0 ||
        !k->label[0])
        return -1;
    const char *hex = s2 + 1;
    if (strncmp(hex, "kcv-", 4) == 0) {
        k->kcv = 1;
        hex += 4;
    }
    size_t hl = strlen(hex);
    if (hl == 0 || hl % 2 || hl / 2 > sizeof k->ident ||
        sodium_hex2bin(k->ident, sizeof k->ident, hex, hl, NULL, &k->ident_len, NULL) != 0 ||
        k->ident_len != hl / 2)
        return -1;
    return 0;
}

/* The cached key for key_id, looking it up in the token on first use. NULL + err when none. */
static struct p11_key *key_for_id(struct kek_p11 *p, const char *key_id, es_error *err)
{
    for (size_t i = 0; i < p->n_keys; i++)
        if (strcmp(p->keys[i].key_id, key_id) == 0) {
            if (p->keys[i].h == CK_INVALID_HANDLE)
                break;
            return &p->keys[i];
        }
    struct p11_key k;
    if (parse_key_id(p, key_id, &k) != 0) {
        es_error_set(err, GRPC_STATUS_NOT_FOUND, "unknown key_id %s", key_id);
        return NULL;
    }
    CK_RV rv = CKR_OK;
    int rc = p->have_session ? find_key(p, &k, 1, &rv, err) : -1;
    if (rc < 0 && (!p->have_session || session_lost(rv))) {
        if (reopen(p, err) != 0)
            return NULL;
        rc = find_key(p, &k, 1, &rv, err);
    }
    if (rc != 0) {
        if (rc > 0)
            es_error_set(err, GRPC_STATUS_NOT_FOUND, "unknown key_id %s (no such key in token)",
                         key_id);
        return NULL;
    }
    if (build_key_id(p, &k, err) != 0)
        return NULL;
    for (size_t i = 0; i < p->n_keys; i++)
        if (strcmp(p->keys[i].key_id, k.key_id) == 0) {
            p->keys[i].h = k.h; /* came back after vanishing */
            return &p->keys[i];
        }
    if (add_key(p, &k) != 0) {
        es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "pkcs11: out of memory");
        return NULL;
    }
    log_info("pkcs11 key found for decrypt|key_id=%s", k.key_id);
    return &p->keys[p->n_keys - 1];
}

static int p11_decrypt(kmsplugin_kek *k, buf_t *out, const char *key_id, const uint8_t *ct,
                       size_t ct_len, es_error *err)
{
    struct kek_p11 *p = (struct kek_p11 *)k;
    const char *aad = key_id;
    if (buf_reserve(out, ct_len) != 0)
        return es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "pkcs11: out of memory");
    CK_RV rv = CKR_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (attempt == 1 && reopen(p, err) != 0)
            return -1;
        struct p11_key *key = key_for_id(p, key_id, err);
        if (!key)
            return -1;
        CK_ULONG n = ct_len;
        uint8_t *dst = out->data + out->len;
        if (gcm_op(p, 0, key->h, ct + 1, aad, ct + 1 + KMSPLUGIN_IV_BYTES,
                   ct_len - 1 - KMSPLUGIN_IV_BYTES, dst, &n, &rv) == 0) {
            if (n != ct_len - KMSPLUGIN_CT_OVERHEAD) {
                sodium_memzero(dst, ct_len);
                return es_error_set(err, GRPC_STATUS_INTERNAL,
                                    "pkcs11: C_Decrypt returned %lu bytes, want %zu",
                                    (unsigned long)n, ct_len - KMSPLUGIN_CT_OVERHEAD);
            }
            out->len += n;
            return 0;
        }
        sodium_memzero(dst, ct_len);
        /* Tokens report a bad GCM tag differently: SoftHSM2 says CKR_GENERAL_ERROR. When the
         * session is still fine afterwards, the ciphertext (not the token) was at fault. */
        CK_SESSION_INFO si;
        if (rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_ENCRYPTED_DATA_LEN_RANGE ||
            ((rv == CKR_FUNCTION_FAILED || rv == CKR_GENERAL_ERROR) &&
             p->f->C_GetSessionInfo(p->s, &si) == CKR_OK))
            return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT,
                                "ciphertext failed authentication under key_id %s (%s)", key_id,
                                rv_name(rv));
        if (!session_lost(rv))
            break;
    }
    return p11_fail(err, GRPC_STATUS_UNAVAILABLE, "C_Decrypt (CKM_AES_GCM)", rv);
}

static int p11_health(kmsplugin_kek *k, es_error *err)
{
    struct kek_p11 *p = (struct kek_p11 *)k;
    CK_SESSION_INFO si;
    CK_RV rv = p->have_session ? p->f->C_GetSessionInfo(p->s, &si) : CKR_SESSION_CLOSED;
    if (rv == CKR_OK && (si.state == CKS_RO_USER_FUNCTIONS || si.state == CKS_RW_USER_FUNCTIONS))
        return 0;
    if (rv == CKR_OK || session_lost(rv) || !p->have_session)
        return reopen(p, err);
    return p11_fail(err, GRPC_STATUS_UNAVAILABLE, "C_GetSessionInfo", rv);
}

static void p11_destroy(kmsplugin_kek *k)
{
    struct kek_p11 *p = (struct kek_p11 *)k;
    if (p->f) {
        close_session(p);
        if (p->initialized)
            p->f->C_Finalize(NULL);
    }
    if (p->dl)
        dlclose(p->dl);
    secret_free(p->pin);
    free(p->keys);
    free(p);
}

static const struct kmsplugin_kek_ops p11_ops = {p11_encrypt, p11_decrypt, p11_health, p11_destroy};

/* Module, slot, PIN and a logged-in session; no keys yet. */
static int p11_open(struct kek_p11 **out, const struct kmsplugin_pkcs11_opts *o, CK_FLAGS flags,
                    es_error *err)
{
    *out = NULL;
    struct kek_p11 *p = calloc(1, sizeof *p);
    if (!p)
        return es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "pkcs11: out of memory");
    p->base.ops = &p11_ops;
    p->base.backend = "pkcs11";
    const char *module = o->module ? o->module : KMSPLUGIN_PKCS11_DEFAULT_MODULE;
    secret_t *raw = NULL;
    if (!o->pin_file) {
        es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT, "pkcs11: --pin-file is required");
        goto fail;
    }
    if (kmsplugin_read_private_file(&raw, o->pin_file, "--pin-file", err) != 0)
        goto fail;
    size_t n = raw->len;
    while (n > 0 && (raw->bytes[n - 1] == '\n' || raw->bytes[n - 1] == '\r'))
        n--;
    p->pin = secret_new(raw->bytes, n);
    secret_free(raw);
    if (!p->pin) {
        es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "pkcs11: out of memory");
        goto fail;
    }
    p->dl = dlopen(module, RTLD_NOW | RTLD_LOCAL);
    if (!p->dl) {
        es_error_set(err, GRPC_STATUS_FAILED_PRECONDITION, "pkcs11: --pkcs11-module %s: %s", module,
                     dlerror());
        goto fail;
    }
    CK_C_GetFunctionList gfl;
    *(void **)&gfl = dlsym(p->dl, "C_GetFunctionList");
    if (!gfl || gfl(&p->f) != CKR_OK || !p->f) {
        p->f = NULL;
        es_error_set(err, GRPC_STATUS_FAILED_PRECONDITION,
                     "pkcs11: %s has no usable C_GetFunctionList", module);
        goto fail;
    }
    CK_C_INITIALIZE_ARGS ia;
    memset(&ia, 0, sizeof ia);
    ia.flags = CKF_OS_LOCKING_OK;
    CK_RV rv = p->f->C_Initialize(&ia);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        p11_fail(err, GRPC_STATUS_FAILED_PRECONDITION, "C_Initialize", rv);
        goto fail;
    }
    p->initialized = rv == CKR_OK;
    if (find_slot(p, o->token_label, o->slot, err) != 0)
        goto fail;
    if (open_session(p, flags, err) != 0)
        goto fail;
    *out = p;
    return 0;
fail:
    p11_destroy(&p->base);
    return -1;
}

int kmsplugin_kek_pkcs11_new(kmsplugin_kek **out, const struct kmsplugin_pkcs11_opts *o,
                             es_error *err)
{
    *out = NULL;
    if (!o->key_label || !*o->key_label || strlen(o->key_label) >= LABEL_MAX)
        return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT,
                            "pkcs11: --key-label must be 1..%d bytes", LABEL_MAX - 1);
    struct kek_p11 *p;
    if (p11_open(&p, o, 0, err) != 0)
        return -1;
    for (size_t i = 0; i <= o->n_decrypt_labels; i++) {
        struct p11_key k;
        memset(&k, 0, sizeof k);
        const char *label = i == 0 ? o->key_label : o->decrypt_labels[i - 1];
        if (strlen(label) >= LABEL_MAX) {
            es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT, "pkcs11: label too long");
            goto fail;
        }
        snprintf(k.label, sizeof k.label, "%s", label);
        CK_RV rv;
        if (find_key(p, &k, 0, &rv, err) != 0) {
            es_error_prefix(err, "%s", i == 0 ? "--key-label" : "--decrypt-key-label");
            goto fail;
        }
        if (build_key_id(p, &k, err) != 0 || add_key(p, &k) != 0) {
            es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "pkcs11: out of memory");
            goto fail;
        }
    }
    memcpy(p->base.key_id, p->keys[0].key_id, sizeof p->base.key_id);
    *out = &p->base;
    return 0;
fail:
    p11_destroy(&p->base);
    return -1;
}

int kmsplugin_pkcs11_generate_key(char *key_id_out, size_t cap,
                                  const struct kmsplugin_pkcs11_opts *o, es_error *err)
{
    if (!o->key_label || !*o->key_label || strlen(o->key_label) >= LABEL_MAX)
        return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT,
                            "pkcs11: --key-label must be 1..%d bytes", LABEL_MAX - 1);
    struct kek_p11 *p;
    if (p11_open(&p, o, CKF_RW_SESSION, err) != 0)
        return -1;
    struct p11_key k;
    memset(&k, 0, sizeof k);
    snprintf(k.label, sizeof k.label, "%s", o->key_label);
    CK_RV rv;
    int rc = find_key(p, &k, 0, &rv, err);
    if (rc == 0 || rc < 0) {
        if (rc == 0)
            es_error_set(err, GRPC_STATUS_ALREADY_EXISTS,
                         "pkcs11: an AES key labelled \"%s\" already exists", o->key_label);
        p11_destroy(&p->base);
        return -1;
    }
    es_error_clear(err);
    k.ident_len = 8;
    if (RAND_bytes(k.ident, (int)k.ident_len) != 1) {
        p11_destroy(&p->base);
        return es_error_set(err, GRPC_STATUS_UNAVAILABLE, "pkcs11: no random CKA_ID");
    }
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_AES;
    CK_ULONG len = 32;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},     {CKA_KEY_TYPE, &kt, sizeof kt},
        {CKA_VALUE_LEN, &len, sizeof len}, {CKA_LABEL, k.label, strlen(k.label)},
        {CKA_ID, k.ident, k.ident_len},    {CKA_TOKEN, &yes, sizeof yes},
        {CKA_PRIVATE, &yes, sizeof yes},   {CKA_SENSITIVE, &yes, sizeof yes},
        {CKA_EXTRACTABLE, &no, sizeof no}, {CKA_ENCRYPT, &yes, sizeof yes},
        {CKA_DECRYPT, &yes, sizeof yes},
    };
    CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
    rv = p->f->C_GenerateKey(p->s, &m, tmpl, sizeof tmpl / sizeof tmpl[0], &k.h);
    if (rv != CKR_OK) {
        p11_destroy(&p->base);
        return p11_fail(err, GRPC_STATUS_FAILED_PRECONDITION, "C_GenerateKey (AES-256)", rv);
    }
    rc = build_key_id(p, &k, err);
    if (rc == 0)
        snprintf(key_id_out, cap, "%s", k.key_id);
    p11_destroy(&p->base);
    return rc;
}
