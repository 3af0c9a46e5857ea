/* testlib.h - a minimal table-free unit test harness.
 *
 * A test file defines `static void test_x(void)` functions using CHECK/CHECK_EQ..., and a main
 * that calls RUN(test_x) for each and returns TEST_EXIT(). Each RUN prints one line
 * `PASS <binary> <test>` or `FAIL <binary> <test>`; tests/run-tests.sh counts them.
 */
#ifndef ETCDSEAL_TESTLIB_H
#define ETCDSEAL_TESTLIB_H

#include <stdio.h>
#include <string.h>

static int testlib_failed_total;
static int testlib_failed_current;
static const char *testlib_prog = "test";

#define CHECK(cond)                                                                               \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);            \
            testlib_failed_current++;                                                             \
        }                                                                                         \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                      \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "  %s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);            \
            fprintf(stderr, __VA_ARGS__);                                                         \
            fputc('\n', stderr);                                                                  \
            testlib_failed_current++;                                                             \
        }                                                                                         \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                        \
    do {                                                                                          \
        long long testlib_a = (long long)(a), testlib_b = (long long)(b);                         \
        if (testlib_a != testlib_b) {                                                             \
            fprintf(stderr, "  %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a,   \
                    #b, testlib_a, testlib_b);                                                    \
            testlib_failed_current++;                                                             \
        }                                                                                         \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                        \
    do {                                                                                          \
        const char *testlib_a = (a), *testlib_b = (b);                                            \
        if (!testlib_a || !testlib_b || strcmp(testlib_a, testlib_b) != 0) {                      \
            fprintf(stderr, "  %s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__,   \
                    #a, #b, testlib_a ? testlib_a : "(null)", testlib_b ? testlib_b : "(null)");  \
            testlib_failed_current++;                                                             \
        }                                                                                         \
    } while (0)

#define CHECK_EQ_MEM(a, alen, b, blen)                                                            \
    do {                                                                                          \
        size_t testlib_al = (alen), testlib_bl = (blen);                                          \
        if (testlib_al != testlib_bl || (testlib_al && memcmp((a), (b), testlib_al) != 0)) {      \
            fprintf(stderr, "  %s:%d: bytes %s == %s failed (len %zu vs %zu)\n", __FILE__,        \
                    __LINE__, #a, #b, testlib_al, testlib_bl);                                    \
            testlib_failed_current++;                                                             \
        }                                                                                         \
    } while (0)

#define RUN(fn)                                                                                   \
    do {                                                                                          \
        testlib_failed_current = 0;                                                               \
        fn();                                                                                     \
        printf("%s %s %s\n", testlib_failed_current ? "FAIL" : "PASS", testlib_prog, #fn);       \
        fflush(stdout);                                                                           \
        if (testlib_failed_current)                                                               \
            testlib_failed_total++;                                                               \
    } while (0)

#define TEST_BEGIN(argv0) (testlib_prog = (strrchr((argv0), '/') ? strrchr((argv0), '/') + 1 : (argv0)))
#define TEST_EXIT() (testlib_failed_total ? 1 : 0)

#endif
