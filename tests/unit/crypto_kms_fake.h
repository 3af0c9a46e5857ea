/* crypto_kms_fake.h - start/stop tests/tools/kms_fake_plugin from unit tests.
 *
 * fake_kms_start runs build/tools/kms_fake_plugin (dir from env ETCDSEAL_TOOLS) for one provider
 * of ../shared/vectors/k8s-vectors.json (python3 turns its "fake_kms" entry into flags), or with
 * explicit flags, listening on `listen` ("unix:///@name"), and waits until it serves. Counts and a
 * control file live in a per-process temp dir. Every process is stopped by PID (fake_kms_stop).
 */
#ifndef ETCDSEAL_CRYPTO_KMS_FAKE_H
#define ETCDSEAL_CRYPTO_KMS_FAKE_H

#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

typedef struct fake_kms {
    pid_t pid;
    char counts[256], control[256];
} fake_kms;

static const char *fake_shared_dir(void)
{
    const char *s = getenv("ETCDSEAL_SHARED");
    return s && *s ? s : "../shared";
}

static void fake_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Flags for provider `name` of the vectors JSON, one per line, into out (NUL-separated). */
static int fake_flags_from_json(const char *name, char *out, size_t cap, size_t *n_out)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json,sys\n"
             "d=json.load(open(sys.argv[1]))[\"fake_kms\"][sys.argv[2]]\n"
             "a=[]\n"
             "if d[\"apiVersion\"]==\"v1\": a+=[\"--v1\",\"--kek-b64\",d[\"kek_b64\"]]\n"
             "else:\n"
             "  a+=[\"--v2\",\"--current\",d[\"current_key_id\"]]\n"
             "  for i,k in d[\"keys\"].items():\n"
             "    a+=[\"--key\",i+\"=\"+k[\"kek_b64\"]]\n"
             "    for f,v in (k.get(\"annotations\") or {}).items(): "
             "a+=[\"--annotation\",i+\":\"+f+\"=\"+v]\n"
             "print(\"\\n\".join(a))' %s/vectors/k8s-vectors.json %s",
             fake_shared_dir(), name);
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    size_t len = fread(out, 1, cap - 1, f);
    int rc = pclose(f);
    if (rc != 0 || len == 0)
        return -1;
    out[len] = '\0';
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (out[i] == '\n') {
            out[i] = '\0';
            n++;
        }
    if (len && out[len - 1] != '\0')
        n++;
    *n_out = n;
    return 0;
}

/* flags: NUL-separated list of n strings (plugin flags). Returns 0 when the plugin serves. */
static int fake_kms_start_flags(fake_kms *fk, const char *listen, const char *flags, size_t n,
                                const char *tag)
{
    const char *tools = getenv("ETCDSEAL_TOOLS");
    char bin[512];
    snprintf(bin, sizeof bin, "%s/kms_fake_plugin", tools && *tools ? tools : "build/tools");
    snprintf(fk->counts, sizeof fk->counts, "/tmp/etcdseal-kmsfake-%d-%s.counts", (int)getpid(),
             tag);
    snprintf(fk->control, sizeof fk->control, "/tmp/etcdseal-kmsfake-%d-%s.control", (int)getpid(),
             tag);
    unlink(fk->counts);
    const char *argv[64];
    size_t a = 0;
    argv[a++] = bin;
    argv[a++] = "--listen";
    argv[a++] = listen;
    argv[a++] = "--counts";
    argv[a++] = fk->counts;
    argv[a++] = "--control";
    argv[a++] = fk->control;
    const char *p = flags;
    for (size_t i = 0; i < n && a < 63; i++) {
        argv[a++] = p;
        p += strlen(p) + 1;
    }
    argv[a] = NULL;
    /* posix_spawn, not fork: gRPC's atfork handlers make fork() in a gRPC process fragile */
    pid_t pid;
    if (posix_spawn(&pid, bin, NULL, NULL, (char *const *)argv, environ) != 0)
        return -1;
    fk->pid = pid;
    for (int i = 0; i < 500; i++) { /* up to 5 s */
        struct stat st;
        if (stat(fk->counts, &st) == 0)
            return 0;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fk->pid = 0;
            return -1;
        }
        fake_sleep_ms(10);
    }
    return -1;
}

__attribute__((unused)) static int fake_kms_start(fake_kms *fk, const char *vec_name,
                                                  const char *listen, const char *tag)
{
    char flags[4096];
    size_t n = 0;
    memset(fk, 0, sizeof *fk);
    if (fake_flags_from_json(vec_name, flags, sizeof flags, &n) != 0)
        return -1;
    return fake_kms_start_flags(fk, listen, flags, n, tag);
}

static void fake_kms_stop(fake_kms *fk)
{
    if (fk->pid <= 0)
        return;
    kill(fk->pid, SIGTERM);
    int status;
    for (int i = 0; i < 300; i++) {
        if (waitpid(fk->pid, &status, WNOHANG) == fk->pid) {
            fk->pid = 0;
            return;
        }
        fake_sleep_ms(10);
    }
    kill(fk->pid, SIGKILL);
    waitpid(fk->pid, &status, 0);
    fk->pid = 0;
}

__attribute__((unused)) static void fake_kms_cleanup(fake_kms *fk)
{
    fake_kms_stop(fk);
    unlink(fk->counts);
    unlink(fk->control);
}

typedef struct fake_counts {
    unsigned long status, version, encrypt, decrypt;
} fake_counts;

__attribute__((unused)) static int fake_kms_counts(const fake_kms *fk, fake_counts *c)
{
    memset(c, 0, sizeof *c);
    FILE *f = fopen(fk->counts, "r");
    if (!f)
        return -1;
    int n = fscanf(f, "Status=%lu Version=%lu Encrypt=%lu Decrypt=%lu", &c->status, &c->version,
                   &c->encrypt, &c->decrypt);
    fclose(f);
    return n == 4 ? 0 : -1;
}

/* Writes the control file (e.g. "current=kek-1\nfail=none\n"). */
__attribute__((unused)) static int fake_kms_control(const fake_kms *fk, const char *text)
{
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", fk->control);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fputs(text, f);
    fclose(f);
    fake_sleep_ms(20); /* distinct mtime */
    return rename(tmp, fk->control);
}

#endif
