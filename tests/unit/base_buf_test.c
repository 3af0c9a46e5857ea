/* base_buf_test.c - buf_t growth, formatting and error semantics. */
#include "base/buf.h"
#include "base/error.h"
#include "testlib.h"

static void test_append_grows(void)
{
    buf_t b = BUF_INIT;
    for (int i = 0; i < 1000; i++)
        CHECK_EQ_INT(buf_append(&b, "abcd", 4), 0);
    CHECK_EQ_INT(b.len, 4000);
    CHECK(b.cap >= 4001);
    CHECK(memcmp(b.data + 3996, "abcd", 4) == 0);
    buf_reset(&b);
    CHECK_EQ_INT(b.len, 0);
    buf_free(&b);
    CHECK(b.data == NULL);
}

static void test_appendf(void)
{
    buf_t b = BUF_INIT;
    CHECK_EQ_INT(buf_appendf(&b, "%s=%d", "x", 42), 0);
    CHECK_EQ_INT(buf_appendf(&b, ",%s", "y"), 0);
    CHECK_EQ_STR((const char *)b.data, "x=42,y");
    buf_wipe_free(&b);
}

static void test_error_prefix(void)
{
    es_error e;
    CHECK_EQ_INT(es_error_set(&e, 13, "bad %s", "tag"), -1);
    es_error_prefix(&e, "key %s", "/a");
    CHECK_EQ_STR(e.msg, "key /a: bad tag");
    CHECK_EQ_INT(e.code, 13);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    RUN(test_append_grows);
    RUN(test_appendf);
    RUN(test_error_prefix);
    return TEST_EXIT();
}
