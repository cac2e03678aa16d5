/*
 * test_keys.c - key generation, key files and their errors.
 */
#include "testutil.h"

#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/hm-keys-XXXXXX";

static void setup(void)
{
    strcpy(dir, "/tmp/hm-keys-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    ck_assert_int_eq(chmod(path, mode), 0);
}

START_TEST(test_roundtrip_and_mode)
{
    char p[256], fp1[HM_FINGERPRINT_SIZE], fp2[HM_FINGERPRINT_SIZE];
    struct stat st;
    hm_key *k = NULL, *l = NULL;
    path_in(p, sizeof p, "k");
    ck_assert_int_eq(hm_key_generate(&k), HM_OK);
    ck_assert_int_eq(hm_key_save(k, p, 0, NULL, 0), HM_OK);
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0600);
    ck_assert_int_eq(hm_key_load(&l, p, NULL, 0), HM_OK);
    ck_assert_int_eq(hm_key_fingerprint(k, fp1, sizeof fp1), HM_OK);
    ck_assert_int_eq(hm_key_fingerprint(l, fp2, sizeof fp2), HM_OK);
    ck_assert_str_eq(fp1, fp2);
    ck_assert_uint_eq(strlen(fp1), HM_FINGERPRINT_SIZE - 1);
    ck_assert(strncmp(fp1, "hmk1-", 5) == 0);
    ck_assert_int_eq(hm_key_fingerprint(k, fp1, 10), HM_EINVAL);
    hm_key_free(k);
    hm_key_free(l);
    hm_key_free(NULL);
}
END_TEST

START_TEST(test_generate_differs)
{
    hm_key *a = NULL, *b = NULL;
    char fa[HM_FINGERPRINT_SIZE], fb[HM_FINGERPRINT_SIZE];
    ck_assert_int_eq(hm_key_generate(&a), HM_OK);
    ck_assert_int_eq(hm_key_generate(&b), HM_OK);
    ck_assert_int_eq(hm_key_fingerprint(a, fa, sizeof fa), HM_OK);
    ck_assert_int_eq(hm_key_fingerprint(b, fb, sizeof fb), HM_OK);
    ck_assert_str_ne(fa, fb);
    hm_key_free(a);
    hm_key_free(b);
    ck_assert_uint_eq(hm_key_bytes(), HM_KEY_BYTES);
    ck_assert_int_eq(hm_key_from_bytes(&a, (const unsigned char *)"x", 1),
                     HM_EINVAL);
}
END_TEST

START_TEST(test_no_silent_overwrite)
{
    char p[256], fp0[HM_FINGERPRINT_SIZE], fp1[HM_FINGERPRINT_SIZE],
        msg[HM_ERRMSG_SIZE] = "";
    hm_key *a = test_key(1), *b = test_key(2), *l = NULL;
    path_in(p, sizeof p, "k");
    ck_assert_int_eq(hm_key_save(a, p, 0, NULL, 0), HM_OK);
    ck_assert_int_eq(hm_key_save(b, p, 0, msg, sizeof msg), HM_EEXIST);
    ck_assert_ptr_nonnull(strstr(msg, p));
    ck_assert_int_eq(hm_key_load(&l, p, NULL, 0), HM_OK);
    ck_assert_int_eq(hm_key_fingerprint(a, fp0, sizeof fp0), HM_OK);
    ck_assert_int_eq(hm_key_fingerprint(l, fp1, sizeof fp1), HM_OK);
    ck_assert_str_eq(fp0, fp1); /* the first key is intact */
    hm_key_free(l);
    ck_assert_int_eq(hm_key_save(b, p, HM_KEY_SAVE_FORCE, NULL, 0), HM_OK);
    ck_assert_int_eq(hm_key_load(&l, p, NULL, 0), HM_OK);
    ck_assert_int_eq(hm_key_fingerprint(b, fp0, sizeof fp0), HM_OK);
    ck_assert_int_eq(hm_key_fingerprint(l, fp1, sizeof fp1), HM_OK);
    ck_assert_str_eq(fp0, fp1);
    /* No temporary files are left behind. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 1", dir);
    ck_assert_int_eq(system(cmd), 0);
    hm_key_free(l);
    hm_key_free(a);
    hm_key_free(b);
}
END_TEST

START_TEST(test_refuses_open_permissions)
{
    char p[256], msg[HM_ERRMSG_SIZE] = "";
    hm_key *k = test_key(3), *l = NULL;
    path_in(p, sizeof p, "k");
    ck_assert_int_eq(hm_key_save(k, p, 0, NULL, 0), HM_OK);
    ck_assert_int_eq(chmod(p, 0644), 0);
    ck_assert_int_eq(hm_key_load(&l, p, msg, sizeof msg), HM_EPERM);
    ck_assert_ptr_null(l);
    ck_assert_ptr_nonnull(strstr(msg, p));
    ck_assert_ptr_nonnull(strstr(msg, "0644"));
    ck_assert_int_eq(chmod(p, 0620), 0);
    ck_assert_int_eq(hm_key_load(&l, p, msg, sizeof msg), HM_EPERM);
    ck_assert_int_eq(chmod(p, 0400), 0);
    ck_assert_int_eq(hm_key_load(&l, p, msg, sizeof msg), HM_OK);
    hm_key_free(l);
    hm_key_free(k);
}
END_TEST

static const char *good_hex =
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/* Each malformed file gives HM_EFORMAT, names file and line, and never
 * quotes the key text. */
START_TEST(test_malformed_files)
{
    static const struct {
        const char *text;
        const char *where;
    } cases[] = {
        {"", ":0: empty key file"},
        {"# only a comment\n", ":1: empty key file"},
        {"hallmark-key v2\n", ":1: not a hallmark key file"},
        {"hallmark-key v1\n", ":1: missing key line"},
        {"hallmark-key v1\n00112233\n", ":2: key must be 64 hex digits"},
        {"hallmark-key v1\n"
         "00112233445566778899aabbccddeeff00112233445566778899aabbccddeefz\n",
         ":2: key has a non-hex character at column 64"},
        {"hallmark-key v1\n"
         "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
         "extra\n",
         ":3: unexpected text after the key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char p[256], msg[HM_ERRMSG_SIZE] = "";
        hm_key *l = NULL;
        snprintf(p, sizeof p, "%s/bad%zu", dir, i);
        write_file(p, cases[i].text, 0600);
        ck_assert_int_eq(hm_key_load(&l, p, msg, sizeof msg), HM_EFORMAT);
        ck_assert_ptr_null(l);
        ck_assert_msg(strncmp(msg, p, strlen(p)) == 0, "%s", msg);
        ck_assert_msg(strstr(msg, cases[i].where) != NULL, "case %zu: %s", i,
                      msg);
        ck_assert_ptr_null(strstr(msg, "00112233"));
    }
    /* Comments, blank lines, CRLF and upper-case hex are accepted. */
    char p[256], text[256];
    hm_key *l = NULL;
    snprintf(p, sizeof p, "%s/ok", dir);
    snprintf(text, sizeof text, "# c\r\n\r\nhallmark-key v1\r\n  %s  \r\n",
             "00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff");
    write_file(p, text, 0600);
    ck_assert_int_eq(hm_key_load(&l, p, NULL, 0), HM_OK);
    hm_key_free(l);
    (void)good_hex;
}
END_TEST

START_TEST(test_missing_and_odd_files)
{
    char p[256], msg[HM_ERRMSG_SIZE] = "";
    hm_key *l = NULL;
    path_in(p, sizeof p, "absent");
    ck_assert_int_eq(hm_key_load(&l, p, msg, sizeof msg), HM_EIO);
    ck_assert_ptr_nonnull(strstr(msg, "No such file"));
    ck_assert_int_eq(hm_key_load(&l, dir, msg, sizeof msg), HM_EFORMAT);
    ck_assert_ptr_nonnull(strstr(msg, "not a regular file"));
    /* A huge file is refused without reading it all. */
    path_in(p, sizeof p, "big");
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 10000; i++)
        fputs("# padding padding\n", f);
    fclose(f);
    ck_assert_int_eq(chmod(p, 0600), 0);
    ck_assert_int_eq(hm_key_load(&l, p, msg, sizeof msg), HM_EFORMAT);
    ck_assert_ptr_nonnull(strstr(msg, "too large"));
    /* Saving into a missing directory fails cleanly. */
    hm_key *k = test_key(4);
    path_in(p, sizeof p, "no/such/dir/k");
    ck_assert_int_eq(hm_key_save(k, p, 0, msg, sizeof msg), HM_EIO);
    ck_assert_int_eq(hm_key_save(k, p, 0x80, msg, sizeof msg), HM_EINVAL);
    hm_key_free(k);
    ck_assert_int_eq(hm_key_load(NULL, p, NULL, 0), HM_EINVAL);
}
END_TEST

START_TEST(test_strerror)
{
    for (int c = 0; c >= -9; c--) {
        ck_assert_ptr_nonnull(hm_strerror(c));
        ck_assert_str_ne(hm_strerror(c), "unknown error");
    }
    ck_assert_str_eq(hm_strerror(-1000), "unknown error");
    ck_assert_uint_eq(hm_version_number(), HM_VERSION_NUMBER);
    ck_assert_str_eq(hm_version_string(), HM_VERSION_STRING);
    ck_assert_uint_eq(hm_prf_version(), 1);
}
END_TEST

static Suite *keys_suite(void)
{
    Suite *s = suite_create("keys");
    TCase *tc = tcase_create("files");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_roundtrip_and_mode);
    tcase_add_test(tc, test_generate_differs);
    tcase_add_test(tc, test_no_silent_overwrite);
    tcase_add_test(tc, test_refuses_open_permissions);
    tcase_add_test(tc, test_malformed_files);
    tcase_add_test(tc, test_missing_and_odd_files);
    tcase_add_test(tc, test_strerror);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run(keys_suite());
}
