/* etcd_user_token.c - per-worker etcd token cache and Authenticate messages (see header). */
#include "proxy/etcd_user_token.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "etcdserverpb/rpc.pb-c.h"

typedef struct entry {
    char *user;
    char *token;
    uint64_t stamp; /* insertion order, for eviction */
} entry;

static _Thread_local entry cache[ETCD_USER_TOKEN_CACHE_MAX];
static _Thread_local uint64_t clock_stamp;

/* a worker's tokens are freed when its thread exits (key destructor) */
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static _Thread_local int exit_armed;

static void on_thread_exit(void *unused)
{
    (void)unused;
    etcd_user_token_thread_release();
}

static void exit_key_init(void)
{
    (void)pthread_key_create(&exit_key, on_thread_exit);
}

static void arm_thread_exit(void)
{
    if (exit_armed)
        return;
    exit_armed = 1;
    pthread_once(&exit_once, exit_key_init);
    (void)pthread_setspecific(exit_key, &exit_armed);
}

static void entry_clear(entry *e)
{
    free(e->user);
    if (e->token) {
        sodium_memzero(e->token, strlen(e->token));
        free(e->token);
    }
    memset(e, 0, sizeof *e);
}

const char *etcd_user_token_get(const char *user)
{
    for (size_t i = 0; i < ETCD_USER_TOKEN_CACHE_MAX; i++)
        if (cache[i].user && !strcmp(cache[i].user, user))
            return cache[i].token;
    return NULL;
}

int etcd_user_token_put(const char *user, const char *token)
{
    arm_thread_exit();
    entry *slot = NULL;
    for (size_t i = 0; i < ETCD_USER_TOKEN_CACHE_MAX && !slot; i++)
        if (cache[i].user && !strcmp(cache[i].user, user))
            slot = &cache[i];
    for (size_t i = 0; i < ETCD_USER_TOKEN_CACHE_MAX && !slot; i++)
        if (!cache[i].user)
            slot = &cache[i];
    if (!slot) {
        slot = &cache[0];
        for (size_t i = 1; i < ETCD_USER_TOKEN_CACHE_MAX; i++)
            if (cache[i].stamp < slot->stamp)
                slot = &cache[i];
    }
    entry_clear(slot);
    slot->user = strdup(user);
    slot->token = strdup(token);
    slot->stamp = ++clock_stamp;
    if (!slot->user || !slot->token) {
        entry_clear(slot);
        return -1;
    }
    return 0;
}

void etcd_user_token_drop(const char *user, const char *token)
{
    for (size_t i = 0; i < ETCD_USER_TOKEN_CACHE_MAX; i++)
        if (cache[i].user && !strcmp(cache[i].user, user) &&
            (!token || !strcmp(cache[i].token, token)))
            entry_clear(&cache[i]);
}

int etcd_user_token_request(const access_etcd_user *u, buf_t *out)
{
    if (!u->name || !u->password)
        return -1;
    /* protobuf-c strings are NUL-terminated: a guarded copy of the password with its NUL */
    secret_t *pw = secret_new(NULL, u->password->len + 1);
    if (!pw)
        return -1;
    memcpy(pw->bytes, u->password->bytes, u->password->len);
    pw->bytes[u->password->len] = '\0';
    Etcdserverpb__AuthenticateRequest req = ETCDSERVERPB__AUTHENTICATE_REQUEST__INIT;
    req.name = (char *)u->name;
    req.password = (char *)pw->bytes;
    size_t n = etcdserverpb__authenticate_request__get_packed_size(&req);
    int rc = -1;
    if (buf_reserve(out, n) == 0) {
        out->len += etcdserverpb__authenticate_request__pack(&req, out->data + out->len);
        rc = 0;
    }
    secret_free(pw);
    return rc;
}

char *etcd_user_token_parse(const uint8_t *msg, size_t len)
{
    static const uint8_t empty[1];
    Etcdserverpb__AuthenticateResponse *r =
        etcdserverpb__authenticate_response__unpack(NULL, len, len ? msg : empty);
    if (!r)
        return NULL;
    char *token = r->token && r->token[0] ? strdup(r->token) : NULL;
    etcdserverpb__authenticate_response__free_unpacked(r, NULL);
    return token;
}

int etcd_user_token_is_invalid_error(const char *status_msg)
{
    return status_msg && strstr(status_msg, "invalid auth token") != NULL;
}

void etcd_user_token_thread_release(void)
{
    for (size_t i = 0; i < ETCD_USER_TOKEN_CACHE_MAX; i++)
        entry_clear(&cache[i]);
}
