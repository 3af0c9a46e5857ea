/* base_harden_test.c - harden_process: non-dumpable and RLIMIT_CORE 0 afterwards, from a
 * dumpable process with core dumps allowed (the call runs in a forked child so the state
 * before it is known and the test binary itself is left as it was). */
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/harden.h"
#include "testlib.h"

/* Child exit codes: 0 ok, 10+ which check failed. */
static int child_main(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_CORE, &rl) != 0)
        return 10;
    /* allow core dumps as far as the hard limit lets us, so the call has something to undo */
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_CORE, &rl) != 0)
        return 11;
    if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0 || prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 1)
        return 12;
    es_error err = {0};
    if (harden_process(&err) != 0) {
        fprintf(stderr, "  harden_process: %s\n", err.msg);
        return 13;
    }
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
        return 14;
    struct rlimit after;
    if (getrlimit(RLIMIT_CORE, &after) != 0 || after.rlim_cur != 0 || after.rlim_max != 0)
        return 15;
    /* the hard limit is 0 too: an unprivileged process cannot turn core dumps back on */
    struct rlimit again = {1u << 20, 1u << 20};
    if (geteuid() != 0 && setrlimit(RLIMIT_CORE, &again) == 0)
        return 16;
    /* calling it twice is harmless */
    if (harden_process(&err) != 0)
        return 17;
    return 0;
}

static void test_harden_process(void)
{
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(child_main());
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ_INT(WEXITSTATUS(status), 0);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    RUN(test_harden_process);
    return TEST_EXIT();
}
