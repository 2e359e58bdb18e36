/* SPDX-License-Identifier: MIT */
/* The configuration loader: YAML (libyaml events) into a node tree, then a schema walk that
 * expands ${VAR}, validates every value and builds the immutable struct gw_config. */
#include "config/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <yaml.h>

#include "gateway/util.h"

/* Bounds that keep a hostile or broken file (and the fuzzer) from exhausting the process. */
#define CFG_MAX_BYTES ((size_t)1 << 20)    /* input size */
#define CFG_MAX_DEPTH 32                   /* nesting of mappings and sequences */
#define CFG_MAX_EXPANDED ((size_t)4 << 20) /* bytes produced by ${VAR} expansion, per load */
#define CFG_MAX_WORKERS 256
#define VAR_NAME_MAX 255
#define PATH_LEN 256  /* key paths in messages; longer ones are truncated */
#define SHOW_LEN 72   /* values quoted in messages; longer ones are cut */
#define PATH_MAX_DIR 1000 /* buffer.dir */
#define ORIGIN_LEN 300    /* "https://", a 253-byte name and ":65535", with room to spare */
#define MAX_FIELDS 16 /* keys of the widest fixed mapping */

#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)
#define GIB ((uint64_t)1 << 30)
#define MS_S ((uint64_t)1000)
#define MS_M (60 * MS_S)
#define MS_H (60 * MS_M)
#define DUR_MAX (24 * MS_H)

/* ---- arena: the node tree and expanded strings live only for one load ---- */

struct arena_blk {
    struct arena_blk *next;
    size_t used, cap;
    max_align_t data[];
};

struct arena {
    struct arena_blk *head;
};

#define ARENA_BLK 16384

static void *arena_alloc(struct arena *a, size_t n)
{
    struct arena_blk *b = a->head;
    void *p;

    n = (n + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1);
    if (b == NULL || b->cap - b->used < n) {
        size_t cap = n > ARENA_BLK ? n : ARENA_BLK;

        b = gw_xmalloc(sizeof *b + cap);
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

static void arena_free(struct arena *a)
{
    struct arena_blk *b = a->head;

    while (b != NULL) {
        struct arena_blk *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

/* ---- the node tree: just enough of YAML to keep positions for messages ---- */

enum node_type { N_SCALAR, N_MAP, N_SEQ };

struct node {
    enum node_type type;
    int plain;        /* a plain (unquoted) scalar: only those can be null */
    size_t line, col; /* 1-based, from libyaml's start_mark */
    const char *str;  /* scalar text, NUL-terminated (NUL bytes are refused) */
    size_t len;
    struct node *first, *last; /* children; a mapping alternates key, value */
    struct node *next;
    size_t nkids;
};

struct dupkey {
    const char *a; /* NULL sorts before every non-empty string */
    size_t alen;
    const char *b;
    size_t blen;
    size_t idx;
};

struct loader {
    const char *name;
    const char *data;
    size_t len;
    char *err;
    size_t errlen;
    struct arena arena;
    size_t expanded; /* bytes produced by ${VAR} expansion so far */
    struct gw_config *c;
    const struct dupkey *unames; /* upstream names, sorted, for routes[].upstream */
    size_t nunames;
};

/* ---- messages ---- */

__attribute__((format(printf, 5, 0))) static int
vfail(struct loader *l, size_t line, size_t col, const char *path, const char *fmt, va_list ap)
{
    int n;

    if (l->err == NULL || l->errlen == 0)
        return -1;
    if (line > 0)
        n = snprintf(l->err, l->errlen, "%s:%zu:%zu: %s%s", l->name, line, col, path,
                     *path ? ": " : "");
    else
        n = snprintf(l->err, l->errlen, "%s: ", l->name);
    if (n >= 0 && (size_t)n < l->errlen)
        vsnprintf(l->err + n, l->errlen - (size_t)n, fmt, ap);
    return -1;
}

/* Reports |fmt| at node |n|, prefixed with the key |path| when it is not empty. Returns -1. */
__attribute__((format(printf, 4, 5))) static int fail(struct loader *l, const struct node *n,
                                                      const char *path, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfail(l, n->line, n->col, path, fmt, ap);
    va_end(ap);
    return -1;
}

__attribute__((format(printf, 4, 5))) static int fail_mark(struct loader *l, size_t line,
                                                           size_t col, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfail(l, line, col, "", fmt, ap);
    va_end(ap);
    return -1;
}

/* A message about the whole input: "name: message". */
__attribute__((format(printf, 2, 3))) static int fail_file(struct loader *l, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfail(l, 0, 0, "", fmt, ap);
    va_end(ap);
    return -1;
}

/* Copies |s| into |buf| for quoting in a message: control bytes become '?' so a message stays
 * one line, and long values are cut. */
static const char *show(char *buf, const char *s, size_t len)
{
    size_t n = len < SHOW_LEN - 4 ? len : SHOW_LEN - 4;

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[i] = (char)(ch < 0x20 || ch == 0x7f ? '?' : ch);
    }
    if (n < len) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

static void join(char *out, const char *path, const char *key, size_t keylen)
{
    char kb[SHOW_LEN];

    show(kb, key, keylen);
    snprintf(out, PATH_LEN, "%s%s%s", path, *path ? "." : "", kb);
}

static void join_idx(char *out, const char *path, size_t i)
{
    snprintf(out, PATH_LEN, "%s[%zu]", path, i);
}

/* ---- YAML -> node tree ---- */

static struct node *node_new(struct loader *l, enum node_type type, yaml_mark_t mark)
{
    struct node *n = arena_alloc(&l->arena, sizeof *n);

    memset(n, 0, sizeof *n);
    n->type = type;
    n->line = mark.line + 1;
    n->col = mark.column + 1;
    return n;
}

static void node_add(struct node *parent, struct node *kid)
{
    if (parent->last != NULL)
        parent->last->next = kid;
    else
        parent->first = kid;
    parent->last = kid;
    parent->nkids++;
}

/* Reader errors carry a byte offset rather than a mark: count lines in the input ourselves. */
static void offset_to_mark(const struct loader *l, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < l->len; i++) {
        if (l->data[i] == '\n') {
            (*line)++;
            *col = 1;
        } else if (((unsigned char)l->data[i] & 0xc0) != 0x80) {
            (*col)++;
        }
    }
}

static int yaml_fail(struct loader *l, const yaml_parser_t *p)
{
    const char *problem = p->problem != NULL ? p->problem : "syntax error";
    size_t line, col;

    if (p->error == YAML_MEMORY_ERROR)
        return fail_file(l, "out of memory while parsing YAML");
    if (p->error == YAML_READER_ERROR) {
        offset_to_mark(l, p->problem_offset, &line, &col);
        if (p->problem_value >= 0)
            return fail_mark(l, line, col, "invalid YAML: %s (byte 0x%02X)", problem,
                             (unsigned)p->problem_value);
        return fail_mark(l, line, col, "invalid YAML: %s", problem);
    }
    line = p->problem_mark.line + 1;
    col = p->problem_mark.column + 1;
    if (p->context != NULL)
        /* An unquoted "*.example.com" is read as an alias: say what to do about it. */
        return fail_mark(l, line, col, "invalid YAML: %s (%s at %zu:%zu)%s", problem, p->context,
                         (size_t)p->context_mark.line + 1, (size_t)p->context_mark.column + 1,
                         strcmp(p->context, "while scanning an alias") == 0
                             ? "; quote values that start with '*'"
                             : "");
    return fail_mark(l, line, col, "invalid YAML: %s", problem);
}

/* Builds the tree from libyaml's events. Aliases are refused, which also rules out
 * billion-laughs expansion; nesting is capped so that the schema walk's recursion is bounded. */
static int build_tree(struct loader *l, struct node **root)
{
    struct node *stack[CFG_MAX_DEPTH];
    size_t depth = 0;
    int docs = 0, rc = 0, done = 0;
    yaml_parser_t p;
    yaml_event_t ev;

    *root = NULL;
    if (!yaml_parser_initialize(&p))
        return fail_file(l, "out of memory while parsing YAML");
    yaml_parser_set_input_string(&p, (const unsigned char *)l->data, l->len);
    while (!done && rc == 0) {
        struct node *n = NULL;

        if (!yaml_parser_parse(&p, &ev)) {
            rc = yaml_fail(l, &p);
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1)
                rc = fail_mark(l, ev.start_mark.line + 1, ev.start_mark.column + 1,
                               "only one YAML document is allowed");
            break;
        case YAML_ALIAS_EVENT: {
            const char *a = (const char *)ev.data.alias.anchor;
            char ab[SHOW_LEN];

            rc = fail_mark(l, ev.start_mark.line + 1, ev.start_mark.column + 1,
                           "YAML aliases are not supported ('*%s'): repeat the value instead",
                           show(ab, a, strlen(a)));
            break;
        }
        case YAML_SCALAR_EVENT: {
            const char *s = (const char *)ev.data.scalar.value;
            size_t len = ev.data.scalar.length;
            char *copy;

            /* Double-quoted "\0" would silently cut every C string built from this value. */
            if (memchr(s, '\0', len) != NULL) {
                rc = fail_mark(l, ev.start_mark.line + 1, ev.start_mark.column + 1,
                               "NUL characters are not allowed");
                break;
            }
            n = node_new(l, N_SCALAR, ev.start_mark);
            copy = arena_alloc(&l->arena, len + 1);
            memcpy(copy, s, len);
            copy[len] = '\0';
            n->str = copy;
            n->len = len;
            n->plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
            break;
        }
        case YAML_MAPPING_START_EVENT:
        case YAML_SEQUENCE_START_EVENT:
            if (depth == CFG_MAX_DEPTH) {
                rc = fail_mark(l, ev.start_mark.line + 1, ev.start_mark.column + 1,
                               "nesting deeper than %d levels", CFG_MAX_DEPTH);
                break;
            }
            n = node_new(l, ev.type == YAML_MAPPING_START_EVENT ? N_MAP : N_SEQ, ev.start_mark);
            break;
        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT:
            depth--;
            break;
        default:
            break;
        }
        if (n != NULL) {
            if (depth > 0)
                node_add(stack[depth - 1], n);
            else
                *root = n;
            if (n->type != N_SCALAR)
                stack[depth++] = n;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    return rc;
}

/* ---- node access ---- */

static int is_null(const struct node *n)
{
    if (n->type != N_SCALAR || !n->plain)
        return 0;
    return n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
           strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0;
}

static const char *kind_name(const struct node *n)
{
    switch (n->type) {
    case N_MAP:
        return "a mapping";
    case N_SEQ:
        return "a sequence";
    case N_SCALAR:
        break;
    }
    return is_null(n) ? "an empty value" : "a scalar";
}

static int expect(struct loader *l, const struct node *n, enum node_type type, const char *path)
{
    static const char *const names[] = {"a scalar", "a mapping", "a sequence"};

    if (n->type == type)
        return 0;
    return fail(l, n, path, "expected %s, got %s", names[type], kind_name(n));
}

struct sbuf {
    char *p;
    size_t len, cap;
};

static int sb_put(struct loader *l, struct sbuf *b, const char *s, size_t n)
{
    if (n > CFG_MAX_EXPANDED - l->expanded)
        return -1;
    l->expanded += n;
    if (b->cap - b->len < n + 1) {
        while (b->cap - b->len < n + 1)
            b->cap = b->cap ? b->cap * 2 : 64;
        b->p = gw_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int is_var_start(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '_';
}

static int is_var_char(char ch)
{
    return is_var_start(ch) || (ch >= '0' && ch <= '9');
}

/* Expands ${NAME}, ${NAME:-default} and $$ in scalar |n|. A default is literal text up to the
 * first '}' and is used when NAME is unset or empty (as in the shell). Any other '$' is kept. */
static int expand(struct loader *l, const struct node *n, const char *path, const char **out,
                  size_t *outlen)
{
    const char *s = n->str;
    size_t len = n->len, i = 0;
    struct sbuf b = {0};
    char vb[SHOW_LEN];
    char *copy;

    if (memchr(s, '$', len) == NULL) {
        *out = s;
        *outlen = len;
        return 0;
    }
    while (i < len) {
        const char *d = memchr(s + i, '$', len - i);
        size_t lit = d != NULL ? (size_t)(d - (s + i)) : len - i;
        char name[VAR_NAME_MAX + 1];
        const char *val, *def = NULL;
        size_t j, nlen, deflen = 0;

        if (sb_put(l, &b, s + i, lit))
            goto too_big;
        i += lit;
        if (i == len)
            break;
        if (i + 1 < len && s[i + 1] == '$') {
            if (sb_put(l, &b, "$", 1))
                goto too_big;
            i += 2;
            continue;
        }
        if (i + 1 >= len || s[i + 1] != '{') {
            if (sb_put(l, &b, "$", 1))
                goto too_big;
            i++;
            continue;
        }
        j = i + 2;
        if (j >= len || !is_var_start(s[j]))
            goto malformed;
        while (j < len && is_var_char(s[j]))
            j++;
        nlen = j - (i + 2);
        if (nlen > VAR_NAME_MAX)
            goto malformed;
        memcpy(name, s + i + 2, nlen);
        name[nlen] = '\0';
        if (j + 1 < len && s[j] == ':' && s[j + 1] == '-') {
            def = s + j + 2;
            j += 2;
            while (j < len && s[j] != '}' && s[j] != '$' && s[j] != '{')
                j++;
            deflen = (size_t)(s + j - def);
        }
        if (j >= len || s[j] != '}')
            goto malformed;
        i = j + 1;
        val = getenv(name);
        if (def != NULL && (val == NULL || *val == '\0')) {
            if (sb_put(l, &b, def, deflen))
                goto too_big;
            continue;
        }
        if (val == NULL) {
            free(b.p);
            return fail(l, n, path, "environment variable %s is not set", name);
        }
        if (sb_put(l, &b, val, strlen(val)))
            goto too_big;
    }
    copy = arena_alloc(&l->arena, b.len + 1);
    if (b.len > 0)
        memcpy(copy, b.p, b.len);
    copy[b.len] = '\0';
    free(b.p);
    *out = copy;
    *outlen = b.len;
    return 0;

malformed:
    free(b.p);
    return fail(l, n, path,
                "malformed variable reference in '%s' (expected ${NAME} or ${NAME:-default})",
                show(vb, s, len));
too_big:
    free(b.p);
    return fail(l, n, path, "configuration too large after ${VAR} expansion (limit %zu MiB)",
                CFG_MAX_EXPANDED >> 20);
}

/* A scalar value, ${VAR}-expanded. */
static int get_str(struct loader *l, const struct node *n, const char *path, const char **s,
                   size_t *len)
{
    if (n->type != N_SCALAR)
        return expect(l, n, N_SCALAR, path);
    if (is_null(n))
        return fail(l, n, path, "missing value");
    if (expand(l, n, path, s, len))
        return -1;
    if (memchr(*s, '\0', *len) != NULL)
        return fail(l, n, path, "NUL characters are not allowed");
    return 0;
}

/* ---- values ---- */

static int parse_dec(const char *s, uint64_t *out)
{
    uint64_t v = 0;

    if (*s == '\0')
        return -1;
    for (; *s != '\0'; s++) {
        unsigned d = (unsigned)(*s - '0');

        if (*s < '0' || *s > '9' || v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static char lower(char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
}

/* Splits |s| into its leading digits (into |*v|) and the unit after them. */
static int split_number(const char *s, uint64_t *v, const char **unit)
{
    char digits[24];
    size_t n = 0;

    while (s[n] >= '0' && s[n] <= '9') {
        if (n == sizeof digits - 1)
            return -1; /* more digits than any uint64_t has */
        digits[n] = s[n];
        n++;
    }
    digits[n] = '\0';
    if (n == 0 || parse_dec(digits, v))
        return -1;
    *unit = s + n;
    return 0;
}

int gw_parse_size(const char *s, uint64_t *out)
{
    uint64_t v, mult = 1;
    const char *u;

    if (s == NULL || out == NULL || split_number(s, &v, &u))
        return -1;
    if (*u != '\0') {
        switch (lower(*u)) {
        case 'k':
            mult = KIB;
            break;
        case 'm':
            mult = MIB;
            break;
        case 'g':
            mult = GIB;
            break;
        default:
            return -1;
        }
        if (u[1] != '\0')
            return -1;
    }
    if (v > UINT64_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

int gw_parse_duration(const char *s, uint64_t *out)
{
    uint64_t v, mult;
    const char *u;

    if (s == NULL || out == NULL || split_number(s, &v, &u))
        return -1;
    if (u[0] == '\0')
        mult = MS_S;
    else if (lower(u[0]) == 'm' && lower(u[1]) == 's' && u[2] == '\0')
        mult = 1;
    else if (u[1] != '\0')
        return -1;
    else if (lower(u[0]) == 's')
        mult = MS_S;
    else if (lower(u[0]) == 'm')
        mult = MS_M;
    else if (lower(u[0]) == 'h')
        mult = MS_H;
    else
        return -1;
    if (v > UINT64_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

static const char *fmt_size(char *buf, size_t cap, uint64_t v)
{
    if (v >= GIB && v % GIB == 0)
        snprintf(buf, cap, "%llug", (unsigned long long)(v / GIB));
    else if (v >= MIB && v % MIB == 0)
        snprintf(buf, cap, "%llum", (unsigned long long)(v / MIB));
    else if (v >= KIB && v % KIB == 0)
        snprintf(buf, cap, "%lluk", (unsigned long long)(v / KIB));
    else
        snprintf(buf, cap, "%llu", (unsigned long long)v);
    return buf;
}

static const char *fmt_duration(char *buf, size_t cap, uint64_t ms)
{
    if (ms >= MS_H && ms % MS_H == 0)
        snprintf(buf, cap, "%lluh", (unsigned long long)(ms / MS_H));
    else if (ms >= MS_M && ms % MS_M == 0)
        snprintf(buf, cap, "%llum", (unsigned long long)(ms / MS_M));
    else if (ms % MS_S == 0)
        snprintf(buf, cap, "%llus", (unsigned long long)(ms / MS_S));
    else
        snprintf(buf, cap, "%llums", (unsigned long long)ms);
    return buf;
}

/* Parses a decimal port 1..65535. */
static int parse_port(const char *s, size_t len, uint16_t *out)
{
    unsigned v = 0;

    if (len == 0 || len > 5)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

/* Splits "host:port" or "[v6]:port". The host keeps no brackets; an unbracketed host holding a
 * ':' is refused (an IPv6 address must be bracketed to tell it from the port). */
static int split_hostport(const char *s, size_t len, const char **host, size_t *hostlen,
                          const char **port, size_t *portlen, int *bracketed)
{
    const char *colon;

    *bracketed = len > 0 && s[0] == '[';
    if (*bracketed) {
        const char *end = memchr(s, ']', len);

        if (end == NULL || end + 1 >= s + len || end[1] != ':')
            return -1;
        *host = s + 1;
        *hostlen = (size_t)(end - s) - 1;
        colon = end + 1;
    } else {
        colon = memchr(s, ':', len);
        if (colon == NULL || memchr(colon + 1, ':', len - (size_t)(colon + 1 - s)) != NULL)
            return -1;
        *host = s;
        *hostlen = (size_t)(colon - s);
    }
    if (*hostlen == 0)
        return -1;
    *port = colon + 1;
    *portlen = len - (size_t)(colon + 1 - s);
    return 0;
}

/* inet_pton() on a (|s|, |len|) slice. */
static int pton(int family, const char *s, size_t len, void *out)
{
    char buf[64];

    if (len >= sizeof buf)
        return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(family, buf, out) == 1;
}

static int all_digits_dots(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != '.' && (s[i] < '0' || s[i] > '9'))
            return 0;
    return 1;
}

/* A DNS name as containers use them: labels of letters, digits, '-' and '_', 1..63 bytes
 * each, 253 in all, no empty label. */
static int valid_dns_name(const char *s, size_t len)
{
    size_t label = 0;

    if (len == 0 || len > 253)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];

        if (ch == '.') {
            if (label == 0)
                return 0;
            label = 0;
            continue;
        }
        if (!is_var_char(ch) && ch != '-')
            return 0;
        if (++label > 63)
            return 0;
    }
    return label > 0;
}

static int parse_cidr(const char *s, size_t len, struct gw_cidr *out)
{
    const char *slash = memchr(s, '/', len);
    size_t alen = slash != NULL ? (size_t)(slash - s) : len;
    unsigned max, prefix;

    memset(out, 0, sizeof *out);
    if (memchr(s, ':', alen) != NULL) {
        out->family = AF_INET6;
        max = 128;
    } else {
        out->family = AF_INET;
        max = 32;
    }
    if (!pton(out->family, s, alen, out->addr))
        return -1;
    prefix = max;
    if (slash != NULL) {
        size_t plen = len - alen - 1;

        if (plen == 0 || plen > 3)
            return -1;
        prefix = 0;
        for (size_t i = 0; i < plen; i++) {
            if (slash[1 + i] < '0' || slash[1 + i] > '9')
                return -1;
            prefix = prefix * 10 + (unsigned)(slash[1 + i] - '0');
        }
        if (prefix > max)
            return -1;
    }
    out->prefix = prefix;
    /* "10.1.2.3/8" is taken as 10.0.0.0/8, as the header promises zeroed host bits. */
    for (unsigned bit = prefix; bit < max; bit++)
        out->addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    return 0;
}

/* ---- duplicate detection: sort, then look at neighbours, so big files stay linear-ish ---- */

static int bytes_cmp(const char *x, size_t xl, const char *y, size_t yl)
{
    size_t m = xl < yl ? xl : yl;
    int r = m > 0 ? memcmp(x, y, m) : 0;

    if (r != 0)
        return r;
    return (xl > yl) - (xl < yl);
}

static int dupkey_cmp_keys(const struct dupkey *x, const struct dupkey *y)
{
    int r = bytes_cmp(x->a, x->alen, y->a, y->alen);

    return r != 0 ? r : bytes_cmp(x->b, x->blen, y->b, y->blen);
}

static int dupkey_cmp(const void *pa, const void *pb)
{
    const struct dupkey *x = pa, *y = pb;
    int r = dupkey_cmp_keys(x, y);

    if (r != 0)
        return r;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* bsearch() over names sorted by dupkey_cmp(): the index is not part of the key. */
static int dupkey_cmp_name(const void *pa, const void *pb)
{
    return dupkey_cmp_keys(pa, pb);
}

/* Sorts |k| and finds the earliest entry (in file order) equal to an earlier one: returns 1 with
 * its index in |*dup| and the first one's in |*orig|, else 0. */
static int first_dup(struct dupkey *k, size_t n, size_t *dup, size_t *orig)
{
    size_t group = 0;
    int found = 0;

    if (n < 2)
        return 0;
    qsort(k, n, sizeof *k, dupkey_cmp);
    for (size_t j = 1; j < n; j++) {
        if (dupkey_cmp_keys(&k[j - 1], &k[j]) != 0) {
            group = j;
            continue;
        }
        if (!found || k[j].idx < *dup) {
            *dup = k[j].idx;
            *orig = k[group].idx;
            found = 1;
        }
    }
    return found;
}

/* ---- the schema ---- */

enum field_kind { F_UINT, F_SIZE, F_DURATION, F_BOOL, F_ENUM, F_MAP, F_FN };

typedef int field_fn(struct loader *l, const struct node *v, const char *path, void *base);

/* One key of a fixed mapping. Leaf values are stored at |off| (|width| bytes) from the base
 * object the mapping is walked with; F_MAP walks |sub| with the same base. */
struct field {
    const char *key;
    enum field_kind kind;
    int required;
    size_t off, width;
    uint64_t min, max;
    const char *const *names; /* F_ENUM: value i stores i */
    size_t nnames;
    const char *expected;    /* F_ENUM: the list shown in messages */
    const struct field *sub; /* F_MAP */
    size_t nsub;
    field_fn *fn; /* F_FN */
};

#define AT(T, m) .off = offsetof(T, m), .width = sizeof(((T *)0)->m)
#define SUB(t) .sub = (t), .nsub = GW_ARRAY_LEN(t)
#define NAMES(t) .names = (t), .nnames = GW_ARRAY_LEN(t)

static void store(void *dst, size_t width, uint64_t v)
{
    if (width == sizeof(uint64_t)) {
        memcpy(dst, &v, sizeof v);
    } else if (width == sizeof(uint32_t)) {
        uint32_t w = (uint32_t)v; /* ranges are checked against the field before this */
        memcpy(dst, &w, sizeof w);
    } else {
        abort(); /* a field table entry of a width this loader does not know */
    }
}

static int walk_map(struct loader *l, const struct node *m, const char *path, const struct field *f,
                    size_t nf, void *base);

static int parse_field(struct loader *l, const struct field *f, const struct node *v,
                       const char *path, void *base)
{
    char vb[SHOW_LEN], lo[32], hi[32];
    const char *s;
    size_t len;
    uint64_t x = 0;
    size_t i;

    if (f->kind == F_MAP)
        return walk_map(l, v, path, f->sub, f->nsub, base);
    if (f->kind == F_FN)
        return f->fn(l, v, path, base);
    if (get_str(l, v, path, &s, &len))
        return -1;
    show(vb, s, len);
    switch (f->kind) {
    case F_UINT:
        if (parse_dec(s, &x))
            return fail(l, v, path, "invalid integer '%s'", vb);
        if (x < f->min || x > f->max)
            return fail(l, v, path, "%s is out of range (%llu..%llu)", vb,
                        (unsigned long long)f->min, (unsigned long long)f->max);
        break;
    case F_SIZE:
        if (gw_parse_size(s, &x))
            return fail(l, v, path, "invalid size '%s' (examples: 512, 16k, 10m, 1g)", vb);
        if (x < f->min || x > f->max)
            return fail(l, v, path, "%s is out of range (%s..%s)", vb,
                        fmt_size(lo, sizeof lo, f->min), fmt_size(hi, sizeof hi, f->max));
        break;
    case F_DURATION:
        if (gw_parse_duration(s, &x))
            return fail(l, v, path, "invalid duration '%s' (examples: 500ms, 30s, 5m)", vb);
        if (x < f->min || x > f->max)
            return fail(l, v, path, "%s is out of range (%s..%s)", vb,
                        fmt_duration(lo, sizeof lo, f->min), fmt_duration(hi, sizeof hi, f->max));
        break;
    case F_BOOL:
        if (strcmp(s, "true") == 0)
            x = 1;
        else if (strcmp(s, "false") != 0)
            return fail(l, v, path, "expected true or false, got '%s'", vb);
        break;
    case F_ENUM:
        for (i = 0; i < f->nnames; i++)
            if (strcmp(s, f->names[i]) == 0)
                break;
        if (i == f->nnames)
            return fail(l, v, path, "invalid value '%s' (expected %s)", vb, f->expected);
        x = i;
        break;
    case F_MAP:
    case F_FN:
        break;
    }
    store((char *)base + f->off, f->width, x);
    return 0;
}

/* Walks mapping |m| (at key path |path|, "" for the top level) against |f|: refuses non-scalar,
 * duplicate and unknown keys in file order, then missing required keys, then parses the values
 * in table order (so that upstreams are known before routes name them). */
static int walk_map(struct loader *l, const struct node *m, const char *path, const struct field *f,
                    size_t nf, void *base)
{
    const struct node *vals[MAX_FIELDS] = {0};
    const char *where = *path ? path : "top level";
    char kb[SHOW_LEN], kp[PATH_LEN];

    if (expect(l, m, N_MAP, path))
        return -1;
    for (const struct node *k = m->first; k != NULL; k = k->next->next) {
        size_t i;

        if (k->type != N_SCALAR)
            return fail(l, k, path, "expected a scalar key, got %s", kind_name(k));
        for (i = 0; i < nf; i++)
            if (strlen(f[i].key) == k->len && memcmp(f[i].key, k->str, k->len) == 0)
                break;
        if (i == nf)
            return fail(l, k, "", "unknown key '%s' in %s", show(kb, k->str, k->len), where);
        if (vals[i] != NULL)
            return fail(l, k, "", "duplicate key '%s' in %s", show(kb, k->str, k->len), where);
        vals[i] = k->next;
    }
    for (size_t i = 0; i < nf; i++)
        if (f[i].required && vals[i] == NULL)
            return fail(l, m, "", "missing required key '%s' in %s", f[i].key, where);
    for (size_t i = 0; i < nf; i++) {
        if (vals[i] == NULL)
            continue;
        join(kp, path, f[i].key, strlen(f[i].key));
        if (parse_field(l, &f[i], vals[i], kp, base))
            return -1;
    }
    return 0;
}

/* A sequence that must hold at least one entry. */
static int nonempty_seq(struct loader *l, const struct node *v, const char *path, const char *what)
{
    if (expect(l, v, N_SEQ, path))
        return -1;
    if (v->nkids == 0)
        return fail(l, v, path, "at least one %s is required", what);
    return 0;
}

static unsigned auto_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        return 1;
    return n > CFG_MAX_WORKERS ? CFG_MAX_WORKERS : (unsigned)n;
}

static int parse_workers(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_config *c = base;
    char vb[SHOW_LEN];
    const char *s;
    size_t len;
    uint64_t x;

    if (get_str(l, v, path, &s, &len))
        return -1;
    if (strcmp(s, "auto") == 0) {
        c->workers = auto_workers();
        return 0;
    }
    if (parse_dec(s, &x) || x < 1 || x > CFG_MAX_WORKERS)
        return fail(l, v, path, "invalid value '%s' (expected auto or an integer 1..%d)",
                    show(vb, s, len), CFG_MAX_WORKERS);
    c->workers = (unsigned)x;
    return 0;
}

static int parse_listen_address(struct loader *l, const struct node *v, const char *path,
                                void *base)
{
    struct gw_listen_conf *lc = base;
    const char *s, *host, *port;
    size_t len, hostlen, portlen;
    int bracketed;
    uint16_t p;
    char vb[SHOW_LEN];

    if (get_str(l, v, path, &s, &len))
        return -1;
    show(vb, s, len);
    if (split_hostport(s, len, &host, &hostlen, &port, &portlen, &bracketed))
        goto bad;
    if (parse_port(port, portlen, &p))
        return fail(l, v, path, "invalid port in '%s' (expected 1..65535)", vb);
    memset(&lc->addr, 0, sizeof lc->addr);
    if (bracketed) {
        struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(p)};

        if (!pton(AF_INET6, host, hostlen, &sin6.sin6_addr))
            goto bad;
        memcpy(&lc->addr, &sin6, sizeof sin6);
        lc->addrlen = sizeof sin6;
    } else {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(p)};

        if (hostlen == 1 && host[0] == '*')
            sin.sin_addr.s_addr = htonl(INADDR_ANY);
        else if (!pton(AF_INET, host, hostlen, &sin.sin_addr))
            goto bad;
        memcpy(&lc->addr, &sin, sizeof sin);
        lc->addrlen = sizeof sin;
    }
    lc->address = gw_xstrndup(s, len);
    return 0;
bad:
    return fail(l, v, path, "invalid address '%s' (expected IP:PORT, [IPv6]:PORT or *:PORT)", vb);
}

/* Index i is enum gw_h2_mode i; UNSET cannot be written. */
static const char *const h2_mode_names[] = {"", "off", "on", "prior_knowledge"};

static const struct node *map_value(const struct node *m, const char *key);

/* A file path of tls: (not opened here: gateway/tls.c reads it and reports at |line|:|col|). */
static int parse_tls_file(struct loader *l, const struct node *v, const char *path,
                          struct gw_tls_file *f)
{
    const char *s;
    size_t len;

    if (get_str(l, v, path, &s, &len))
        return -1;
    f->path = gw_xstrndup(s, len);
    f->line = v->line;
    f->col = v->col;
    return 0;
}

static int parse_tls_cert_path(struct loader *l, const struct node *v, const char *path,
                               void *base)
{
    return parse_tls_file(l, v, path, &((struct gw_tls_cert_conf *)base)->cert);
}

static int parse_tls_key_path(struct loader *l, const struct node *v, const char *path,
                              void *base)
{
    return parse_tls_file(l, v, path, &((struct gw_tls_cert_conf *)base)->key);
}

static const struct field tls_cert_fields[] = {
    {.key = "cert", .kind = F_FN, .required = 1, .fn = parse_tls_cert_path},
    {.key = "key", .kind = F_FN, .required = 1, .fn = parse_tls_key_path},
};

static int parse_tls_certs(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_tls_conf *t = base;
    char p[PATH_LEN];
    size_t i = 0;

    if (nonempty_seq(l, v, path, "certificate"))
        return -1;
    t->certs = gw_xcalloc(v->nkids, sizeof *t->certs);
    for (const struct node *e = v->first; e != NULL; e = e->next, i++) {
        join_idx(p, path, i);
        t->ncerts++;
        if (walk_map(l, e, p, tls_cert_fields, GW_ARRAY_LEN(tls_cert_fields), &t->certs[i]))
            return -1;
    }
    return 0;
}

static int parse_tls_client_ca(struct loader *l, const struct node *v, const char *path,
                               void *base)
{
    return parse_tls_file(l, v, path, &((struct gw_tls_conf *)base)->client_ca);
}

/* Index i is enum gw_tls_verify i; NONE cannot be written. */
static const char *const tls_verify_names[] = {"", "require", "optional"};

static const struct field tls_fields[] = {
    {.key = "certificates", .kind = F_FN, .required = 1, .fn = parse_tls_certs},
    {.key = "client_ca", .kind = F_FN, .fn = parse_tls_client_ca},
    {.key = "client_verify",
     .kind = F_ENUM,
     AT(struct gw_tls_conf, client_verify),
     NAMES(tls_verify_names),
     .expected = "require or optional"},
    {.key = "session_tickets", .kind = F_BOOL, AT(struct gw_tls_conf, session_tickets)},
};

static int parse_listen_tls(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_listen_conf *lc = base;
    struct gw_tls_conf *t = gw_xcalloc(1, sizeof *t);
    const struct node *cv;

    lc->tls = t; /* freed with the snapshot, whole or half built */
    t->session_tickets = 1;
    if (walk_map(l, v, path, tls_fields, GW_ARRAY_LEN(tls_fields), t))
        return -1;
    cv = map_value(v, "client_verify");
    if (t->client_ca.path == NULL && cv != NULL)
        return fail(l, cv, path, "client_verify needs client_ca (the CAs to verify against)");
    if (t->client_ca.path != NULL && t->client_verify == GW_TLS_VERIFY_NONE)
        t->client_verify = GW_TLS_VERIFY_REQUIRE;
    return 0;
}

static const struct field listen_fields[] = {
    {.key = "address", .kind = F_FN, .required = 1, .fn = parse_listen_address},
    {.key = "backlog", .kind = F_UINT, AT(struct gw_listen_conf, backlog), .min = 1, .max = 65535},
    {.key = "http2",
     .kind = F_ENUM,
     AT(struct gw_listen_conf, http2),
     NAMES(h2_mode_names),
     .expected = "on, off or prior_knowledge"},
    {.key = "tls", .kind = F_FN, .fn = parse_listen_tls},
};

static int parse_listen(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_config *c = base;
    struct dupkey *keys;
    char p[PATH_LEN], hp[PATH_LEN], vb[SHOW_LEN];
    size_t i = 0, dup, orig;
    const struct node *e;

    if (nonempty_seq(l, v, path, "listener"))
        return -1;
    c->listen = gw_xcalloc(v->nkids, sizeof *c->listen);
    for (e = v->first; e != NULL; e = e->next, i++) {
        struct gw_listen_conf *lc = &c->listen[c->nlisten++];

        lc->backlog = 511;
        lc->line = e->line;
        lc->col = e->col;
        join_idx(p, path, i);
        if (walk_map(l, e, p, listen_fields, GW_ARRAY_LEN(listen_fields), lc))
            return -1;
        if (snprintf(hp, sizeof hp, "%s.http2", p) >= (int)sizeof hp)
            hp[0] = '\0';
        if (lc->tls == NULL && lc->http2 == GW_H2_ON)
            return fail(l, map_value(e, "http2"), hp,
                        "on needs tls (HTTP/2 is chosen by ALPN); for cleartext HTTP/2 use "
                        "prior_knowledge");
        if (lc->tls != NULL && lc->http2 == GW_H2_PRIOR_KNOWLEDGE)
            return fail(l, map_value(e, "http2"), hp,
                        "prior_knowledge is for cleartext listeners; with tls use on (ALPN)");
    }
    /* Two sockets on one address would both bind under SO_REUSEPORT and split the traffic. */
    keys = arena_alloc(&l->arena, c->nlisten * sizeof *keys);
    for (i = 0; i < c->nlisten; i++)
        keys[i] = (struct dupkey){
            .a = (const char *)&c->listen[i].addr, .alen = c->listen[i].addrlen, .idx = i};
    if (!first_dup(keys, c->nlisten, &dup, &orig))
        return 0;
    for (e = v->first, i = 0; i < dup; i++)
        e = e->next;
    join_idx(p, path, dup);
    return fail(l, e, p, "duplicate listen address '%s' (same as %s[%zu])",
                show(vb, c->listen[dup].address, strlen(c->listen[dup].address)), path, orig);
}

static int parse_trusted(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_config *c = base;
    char p[PATH_LEN], vb[SHOW_LEN];
    size_t i = 0;

    if (expect(l, v, N_SEQ, path))
        return -1;
    c->trusted = gw_xcalloc(v->nkids, sizeof *c->trusted);
    for (const struct node *e = v->first; e != NULL; e = e->next, i++) {
        const char *s;
        size_t len;

        join_idx(p, path, i);
        if (get_str(l, e, p, &s, &len))
            return -1;
        if (parse_cidr(s, len, &c->trusted[c->ntrusted]))
            return fail(l, e, p,
                        "invalid CIDR '%s' (expected ADDRESS or ADDRESS/PREFIX, e.g. 10.0.0.0/8)",
                        show(vb, s, len));
        c->ntrusted++;
    }
    return 0;
}

/* resolver.nameservers: numeric "IP", "IP:PORT" or "[IPv6]:PORT", stored as "IP:PORT" (the
 * form evdns_base_nameserver_ip_add() takes). */
static int parse_nameservers(struct loader *l, const struct node *v, const char *path,
                             void *base)
{
    struct gw_config *c = base;
    char p[PATH_LEN], vb[SHOW_LEN], out[80];
    size_t i = 0;

    if (expect(l, v, N_SEQ, path))
        return -1;
    c->resolver.nameservers = gw_xcalloc(v->nkids, sizeof *c->resolver.nameservers);
    for (const struct node *e = v->first; e != NULL; e = e->next, i++) {
        const char *s, *host = NULL, *port = NULL;
        size_t len, hostlen = 0, portlen = 0;
        int bracketed = 0;
        uint16_t pn = 53;
        unsigned char a[16];

        join_idx(p, path, i);
        if (get_str(l, e, p, &s, &len))
            return -1;
        show(vb, s, len);
        if (pton(AF_INET, s, len, a) || pton(AF_INET6, s, len, a)) {
            int v6 = memchr(s, ':', len) != NULL;
            snprintf(out, sizeof out, "%s%.*s%s:53", v6 ? "[" : "", (int)len, s, v6 ? "]" : "");
        } else if (split_hostport(s, len, &host, &hostlen, &port, &portlen, &bracketed) == 0 &&
                   parse_port(port, portlen, &pn) == 0 &&
                   pton(bracketed ? AF_INET6 : AF_INET, host, hostlen, a)) {
            snprintf(out, sizeof out, "%s%.*s%s:%u", bracketed ? "[" : "", (int)hostlen, host,
                     bracketed ? "]" : "", (unsigned)pn);
        } else {
            return fail(l, e, p,
                        "invalid name server '%s' (expected IP, IP:PORT or [IPv6]:PORT)", vb);
        }
        c->resolver.nameservers[c->resolver.nnameservers++] = gw_xstrndup(out, strlen(out));
    }
    return 0;
}

static int parse_protocol(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_upstream_conf *u = base;
    char vb[SHOW_LEN];
    const char *s;
    size_t len;

    if (get_str(l, v, path, &s, &len))
        return -1;
    if (strcmp(s, "http") == 0)
        u->protocol = GW_PROTO_HTTP;
    else if (strcmp(s, "uwsgi") == 0)
        u->protocol = GW_PROTO_UWSGI;
    else if (strcmp(s, "asgi") == 0)
        u->protocol = GW_PROTO_ASGI;
    else
        return fail(l, v, path, "unknown protocol '%s' (supported: http, uwsgi, asgi)",
                    show(vb, s, len));
    return 0;
}

static int parse_server(struct loader *l, const struct node *v, const char *path,
                        struct gw_server_conf *sv)
{
    const char *s, *host, *port;
    size_t len, hostlen, portlen;
    int bracketed;
    char vb[SHOW_LEN];
    unsigned char a6[16];

    if (get_str(l, v, path, &s, &len))
        return -1;
    show(vb, s, len);
    if (len >= 5 && memcmp(s, "unix:", 5) == 0) {
        if (len == 5)
            goto bad;
        if (len - 5 >= sizeof(((struct sockaddr_un *)0)->sun_path))
            return fail(l, v, path, "unix socket path too long in '%s' (limit %zu bytes)", vb,
                        sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        sv->address = gw_xstrndup(s, len);
        sv->unix_path = gw_xstrndup(s + 5, len - 5);
        return 0;
    }
    if (split_hostport(s, len, &host, &hostlen, &port, &portlen, &bracketed))
        goto bad;
    if (bracketed) {
        if (!pton(AF_INET6, host, hostlen, a6))
            goto bad;
        sv->numeric = 1;
    } else if (all_digits_dots(host, hostlen)) {
        /* getaddrinfo would read "10.1" as 10.0.0.1: insist on a full dotted quad. */
        if (!pton(AF_INET, host, hostlen, a6))
            goto bad;
        sv->numeric = 1;
    } else if (!valid_dns_name(host, hostlen)) {
        goto bad;
    }
    if (parse_port(port, portlen, &sv->port))
        return fail(l, v, path, "invalid port in '%s' (expected 1..65535)", vb);
    sv->address = gw_xstrndup(s, len);
    sv->host = gw_xstrndup(host, hostlen);
    return 0;
bad:
    return fail(l, v, path,
                "invalid server address '%s' (expected HOST:PORT, [IPv6]:PORT or unix:/path)", vb);
}

static int parse_servers(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_upstream_conf *u = base;
    char p[PATH_LEN];
    size_t i = 0;

    if (nonempty_seq(l, v, path, "server"))
        return -1;
    u->servers = gw_xcalloc(v->nkids, sizeof *u->servers);
    for (const struct node *e = v->first; e != NULL; e = e->next, i++) {
        join_idx(p, path, i);
        if (parse_server(l, e, p, &u->servers[u->nservers++]))
            return -1;
    }
    return 0;
}

static int parse_buffer_dir(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_upstream_conf *u = base;
    const char *s;
    size_t len;

    if (get_str(l, v, path, &s, &len))
        return -1;
    if (len == 0 || s[0] != '/')
        return fail(l, v, path, "buffer directory must be an absolute path");
    /* mkstemp() appends "/gatehouse-XXXXXX" to it. */
    if (len > PATH_MAX_DIR)
        return fail(l, v, path, "buffer directory path too long (limit %d bytes)",
                    PATH_MAX_DIR);
    free(u->buffer_dir);
    u->buffer_dir = gw_xstrndup(s, len);
    return 0;
}

static const struct field buffer_fields[] = {
    {.key = "memory",
     .kind = F_SIZE,
     AT(struct gw_upstream_conf, buffer_memory),
     .min = 0,
     .max = (uint64_t)1 << 30},
    {.key = "dir", .kind = F_FN, .fn = parse_buffer_dir},
};

static int parse_buffer(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_upstream_conf *u = base;

    /* "protocol" is parsed before "buffer". */
    if (u->protocol != GW_PROTO_UWSGI)
        return fail(l, v, path,
                    "buffer applies to uwsgi upstreams only (http upstreams stream both ways)");
    return walk_map(l, v, path, buffer_fields, GW_ARRAY_LEN(buffer_fields), base);
}

/* Parses the fields of |f| (one entry) for uwsgi upstreams, refusing them for others. */
static int uwsgi_only(struct loader *l, const struct node *v, const char *path, void *base,
                      const struct field *f, const char *what)
{
    const struct gw_upstream_conf *u = base;

    /* "protocol" is parsed before the keys that call this. */
    if (u->protocol != GW_PROTO_UWSGI)
        return fail(l, v, path, "%s applies to uwsgi upstreams only", what);
    return parse_field(l, f, v, path, base);
}

static int parse_tls_client_headers(struct loader *l, const struct node *v, const char *path,
                                    void *base)
{
    static const struct field f = {.key = "tls_client_headers",
                                   .kind = F_BOOL,
                                   AT(struct gw_upstream_conf, tls_client_headers)};
    const struct gw_upstream_conf *u = base;

    if (u->protocol != GW_PROTO_HTTP)
        return fail(l, v, path,
                    "tls_client_headers applies to http upstreams only (uwsgi and asgi get "
                    "the TLS facts as SSL_* vars and the tls scope extension)");
    return parse_field(l, &f, v, path, base);
}

static int parse_concurrency(struct loader *l, const struct node *v, const char *path, void *base)
{
    static const struct field f = {.key = "concurrency",
                                   .kind = F_UINT,
                                   AT(struct gw_upstream_conf, concurrency),
                                   .min = 0,
                                   .max = 1000000};

    return uwsgi_only(l, v, path, base, &f, "concurrency");
}

static const struct field queue_fields[] = {
    {.key = "limit",
     .kind = F_UINT,
     AT(struct gw_upstream_conf, queue_limit),
     .min = 0,
     .max = 1000000},
    {.key = "timeout",
     .kind = F_DURATION,
     AT(struct gw_upstream_conf, queue_timeout_ms),
     .min = 1,
     .max = DUR_MAX},
    {.key = "retry_after",
     .kind = F_DURATION,
     AT(struct gw_upstream_conf, retry_after_ms),
     .min = MS_S,
     .max = 86400 * MS_S},
};

static int parse_queue(struct loader *l, const struct node *v, const char *path, void *base)
{
    static const struct field f = {.key = "queue", .kind = F_MAP, SUB(queue_fields)};

    return uwsgi_only(l, v, path, base, &f, "queue");
}

/* Parses |f| for asgi upstreams, refusing it for others. */
static int asgi_only(struct loader *l, const struct node *v, const char *path, void *base,
                     const struct field *f)
{
    const struct gw_upstream_conf *u = base;

    /* "protocol" is parsed before the keys that call this. */
    if (u->protocol != GW_PROTO_ASGI)
        return fail(l, v, path, "%s applies to asgi upstreams only", f->key);
    return parse_field(l, f, v, path, base);
}

static int parse_connections(struct loader *l, const struct node *v, const char *path, void *base)
{
    static const struct field f = {.key = "connections",
                                   .kind = F_UINT,
                                   AT(struct gw_upstream_conf, connections),
                                   .min = 1,
                                   .max = 64};

    return asgi_only(l, v, path, base, &f);
}

static const struct field ping_fields[] = {
    {.key = "interval",
     .kind = F_DURATION,
     AT(struct gw_upstream_conf, ping_interval_ms),
     .min = 100,
     .max = DUR_MAX},
    {.key = "timeout",
     .kind = F_DURATION,
     AT(struct gw_upstream_conf, ping_timeout_ms),
     .min = 100,
     .max = DUR_MAX},
};

static int parse_ping(struct loader *l, const struct node *v, const char *path, void *base)
{
    static const struct field f = {.key = "ping", .kind = F_MAP, SUB(ping_fields)};

    return asgi_only(l, v, path, base, &f);
}

static const char *const balance_names[] = {"round_robin", "least_outstanding"};

static const struct field upstream_timeout_fields[] = {
    {.key = "connect",
     .kind = F_DURATION,
     AT(struct gw_upstream_conf, connect_ms),
     .min = 1,
     .max = DUR_MAX},
    {.key = "first_byte",
     .kind = F_DURATION,
     AT(struct gw_upstream_conf, first_byte_ms),
     .min = 1,
     .max = DUR_MAX},
    {.key = "read",
     .kind = F_DURATION,
     AT(struct gw_upstream_conf, read_ms),
     .min = 1,
     .max = DUR_MAX},
    {.key = "send",
     .kind = F_DURATION,
     AT(struct gw_upstream_conf, send_ms),
     .min = 1,
     .max = DUR_MAX},
};

static const struct field keepalive_fields[] = {
    {.key = "connections",
     .kind = F_UINT,
     AT(struct gw_upstream_conf, keepalive_conns),
     .min = 0,
     .max = 10000},
    {.key = "timeout",
     .kind = F_DURATION,
     AT(struct gw_upstream_conf, keepalive_ms),
     .min = 1,
     .max = DUR_MAX},
    {.key = "requests",
     .kind = F_UINT,
     AT(struct gw_upstream_conf, keepalive_requests),
     .min = 1,
     .max = 1000000000},
};

static const struct field health_fields[] = {
    {.key = "fails",
     .kind = F_UINT,
     AT(struct gw_upstream_conf, health_fails),
     .min = 1,
     .max = 1000},
    {.key = "cooldown",
     .kind = F_DURATION,
     AT(struct gw_upstream_conf, health_cooldown_ms),
     .min = 0,
     .max = DUR_MAX},
};

static const struct field upstream_fields[] = {
    {.key = "protocol", .kind = F_FN, .fn = parse_protocol},
    {.key = "servers", .kind = F_FN, .required = 1, .fn = parse_servers},
    {.key = "buffer", .kind = F_FN, .fn = parse_buffer},
    {.key = "concurrency", .kind = F_FN, .fn = parse_concurrency},
    {.key = "queue", .kind = F_FN, .fn = parse_queue},
    {.key = "connections", .kind = F_FN, .fn = parse_connections},
    {.key = "ping", .kind = F_FN, .fn = parse_ping},
    {.key = "tls_client_headers", .kind = F_FN, .fn = parse_tls_client_headers},
    {.key = "balance",
     .kind = F_ENUM,
     AT(struct gw_upstream_conf, balance),
     NAMES(balance_names),
     .expected = "round_robin or least_outstanding"},
    {.key = "timeouts", .kind = F_MAP, SUB(upstream_timeout_fields)},
    {.key = "keepalive", .kind = F_MAP, SUB(keepalive_fields)},
    {.key = "retries", .kind = F_UINT, AT(struct gw_upstream_conf, retries), .min = 0, .max = 16},
    {.key = "health", .kind = F_MAP, SUB(health_fields)},
    {.key = "resolve",
     .kind = F_DURATION,
     AT(struct gw_upstream_conf, resolve_ms),
     .min = MS_S,
     .max = DUR_MAX},
};

_Static_assert(GW_ARRAY_LEN(upstream_fields) <= MAX_FIELDS, "raise MAX_FIELDS");

static int valid_upstream_name(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!is_var_char(s[i]) && s[i] != '-')
            return 0;
    return 1;
}

static int parse_upstreams(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_config *c = base;
    struct dupkey *keys;
    const struct node *k;
    char p[PATH_LEN], kb[SHOW_LEN];
    size_t n, i, dup, orig;

    if (expect(l, v, N_MAP, path))
        return -1;
    n = v->nkids / 2;
    if (n == 0)
        return fail(l, v, path, "at least one upstream is required");
    keys = arena_alloc(&l->arena, n * sizeof *keys);
    for (k = v->first, i = 0; k != NULL; k = k->next->next, i++) {
        if (k->type != N_SCALAR)
            return fail(l, k, path, "expected a scalar key, got %s", kind_name(k));
        if (!valid_upstream_name(k->str, k->len))
            return fail(l, k, path,
                        "invalid upstream name '%s' (letters, digits, '_' and '-' only)",
                        show(kb, k->str, k->len));
        keys[i] = (struct dupkey){.a = k->str, .alen = k->len, .idx = i};
    }
    if (first_dup(keys, n, &dup, &orig)) {
        for (k = v->first, i = 0; i < dup; i++)
            k = k->next->next;
        return fail(l, k, path, "duplicate upstream '%s'", show(kb, k->str, k->len));
    }
    l->unames = keys; /* sorted by first_dup() */
    l->nunames = n;
    c->upstreams = gw_xcalloc(n, sizeof *c->upstreams);
    for (k = v->first, i = 0; k != NULL; k = k->next->next, i++) {
        struct gw_upstream_conf *u = &c->upstreams[c->nupstreams++];

        u->name = gw_xstrndup(k->str, k->len);
        u->protocol = GW_PROTO_HTTP;
        u->balance = GW_BALANCE_ROUND_ROBIN;
        u->connect_ms = 5 * MS_S;
        u->first_byte_ms = 60 * MS_S;
        u->read_ms = 60 * MS_S;
        u->send_ms = 60 * MS_S;
        u->keepalive_conns = 32;
        u->keepalive_ms = 60 * MS_S;
        u->keepalive_requests = 1000;
        u->retries = 1;
        u->health_fails = 3;
        u->health_cooldown_ms = 10 * MS_S;
        u->resolve_ms = 30 * MS_S;
        u->buffer_memory = 1024 * 1024;
        u->queue_limit = 512;
        u->queue_timeout_ms = 10 * MS_S;
        u->retry_after_ms = MS_S;
        u->connections = 4;
        u->ping_interval_ms = 10 * MS_S;
        u->ping_timeout_ms = 5 * MS_S;
        u->index = i;
        join(p, path, k->str, k->len);
        if (walk_map(l, k->next, p, upstream_fields, GW_ARRAY_LEN(upstream_fields), u))
            return -1;
        if (u->buffer_dir == NULL)
            u->buffer_dir = gw_xstrndup("/tmp", 4);
    }
    return 0;
}

static int parse_route_host(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_route_conf *r = base;
    const char *s, *h;
    size_t len, hl;
    int wild;
    char vb[SHOW_LEN];

    if (get_str(l, v, path, &s, &len))
        return -1;
    show(vb, s, len);
    /* The router compares the request's host with its port removed. */
    if (memchr(s, ':', len) != NULL)
        return fail(l, v, path, "host '%s' must not include a port", vb);
    wild = len > 2 && s[0] == '*' && s[1] == '.';
    h = wild ? s + 2 : s;
    hl = wild ? len - 2 : len;
    if (!valid_dns_name(h, hl))
        return fail(l, v, path,
                    "invalid host '%s' (expected a name such as api.example.com or *.example.com)",
                    vb);
    r->host = gw_xstrndup(s, len);
    for (size_t i = 0; i < len; i++)
        r->host[i] = lower(r->host[i]);
    r->host_wildcard = wild;
    return 0;
}

static int parse_route_path(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_route_conf *r = base;
    const char *s;
    size_t len;
    char vb[SHOW_LEN];

    if (get_str(l, v, path, &s, &len))
        return -1;
    show(vb, s, len);
    if (s[0] != '/')
        return fail(l, v, path, "invalid path '%s' (must start with '/')", vb);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch <= ' ' || ch == 0x7f || ch == '?' || ch == '#')
            return fail(l, v, path, "invalid path '%s' (no spaces, control characters, '?' or '#')",
                        vb);
    }
    /* Prefixes match on segment boundaries, so "/api/" and "/api" mean the same route. */
    while (len > 1 && s[len - 1] == '/')
        len--;
    r->path = gw_xstrndup(s, len);
    r->path_len = len;
    return 0;
}

static int parse_route_upstream(struct loader *l, const struct node *v, const char *path,
                                void *base)
{
    struct gw_route_conf *r = base;
    struct dupkey key = {0};
    const struct dupkey *hit;
    char vb[SHOW_LEN];

    if (get_str(l, v, path, &key.a, &key.alen))
        return -1;
    hit = bsearch(&key, l->unames, l->nunames, sizeof key, dupkey_cmp_name);
    if (hit == NULL)
        return fail(l, v, path, "unknown upstream '%s'", show(vb, key.a, key.alen));
    r->upstream = &l->c->upstreams[hit->idx];
    return 0;
}

/* ---- websocket: the top level's, then each route's over a copy of it ---- */

static int prefix_nocase(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);

    if (len < n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower(s[i]) != prefix[i])
            return 0;
    return 1;
}

enum origin_rc { ORIGIN_OK = 0, ORIGIN_BAD, ORIGIN_PORT, ORIGIN_SLASH, ORIGIN_PATH };

/* Writes origin |s| (|len| bytes, "scheme://host[:port]") into |out| the way browsers serialize
 * the Origin field (RFC 6454 §6.2), so that the gateway can compare bytes: lower case, IPv6 in
 * its compressed form, no port when it is the scheme's default. */
static enum origin_rc canon_origin(const char *s, size_t len, char out[ORIGIN_LEN])
{
    static const char *const schemes[] = {"http://", "https://"};
    static const uint16_t default_ports[] = {80, 443};
    const char *a, *host, *colon = NULL;
    char ip[INET6_ADDRSTRLEN], pb[8] = "";
    unsigned char bin[16];
    size_t sch, alen, hostlen;
    uint16_t port = 0;
    int v6 = 0;

    for (sch = 0; sch < GW_ARRAY_LEN(schemes); sch++)
        if (prefix_nocase(s, len, schemes[sch]))
            break;
    if (sch == GW_ARRAY_LEN(schemes))
        return ORIGIN_BAD;
    a = s + strlen(schemes[sch]);
    alen = strcspn(a, "/?#"); /* |s| is NUL-terminated (get_str) */
    if (a + alen < s + len)
        return a[alen] == '/' && a + alen + 1 == s + len ? ORIGIN_SLASH : ORIGIN_PATH;
    if (alen > 0 && a[0] == '[') {
        const char *rb = memchr(a, ']', alen);

        if (rb == NULL || !pton(AF_INET6, a + 1, (size_t)(rb - a) - 1, bin))
            return ORIGIN_BAD;
        if (rb + 1 < a + alen) {
            if (rb[1] != ':')
                return ORIGIN_BAD;
            colon = rb + 1;
        }
        inet_ntop(AF_INET6, bin, ip, sizeof ip);
        host = ip;
        hostlen = strlen(ip);
        v6 = 1;
    } else {
        colon = memchr(a, ':', alen);
        host = a;
        hostlen = colon != NULL ? (size_t)(colon - a) : alen;
        /* As for servers: a name of digits and dots must be a full dotted quad. */
        if (all_digits_dots(host, hostlen) ? !pton(AF_INET, host, hostlen, bin)
                                           : !valid_dns_name(host, hostlen))
            return ORIGIN_BAD;
    }
    if (colon != NULL && parse_port(colon + 1, (size_t)(a + alen - colon - 1), &port))
        return ORIGIN_PORT;
    if (port != 0 && port != default_ports[sch])
        snprintf(pb, sizeof pb, ":%u", (unsigned)port);
    snprintf(out, ORIGIN_LEN, "%s%s%.*s%s%s", schemes[sch], v6 ? "[" : "", (int)hostlen, host,
             v6 ? "]" : "", pb);
    for (char *o = out; *o != '\0'; o++)
        *o = lower(*o);
    return ORIGIN_OK;
}

static void ws_free_origins(struct gw_ws_conf *ws)
{
    for (size_t i = 0; i < ws->norigins; i++)
        free(ws->origins[i]);
    free(ws->origins);
    ws->origins = NULL;
    ws->norigins = 0;
}

/* Gives |dst|, a struct copy of |src|, its own copy of |src|'s origins. */
static void ws_copy_origins(struct gw_ws_conf *dst, const struct gw_ws_conf *src)
{
    dst->origins = src->norigins > 0 ? gw_xcalloc(src->norigins, sizeof *dst->origins) : NULL;
    for (size_t i = 0; i < src->norigins; i++)
        dst->origins[i] = gw_xstrndup(src->origins[i], strlen(src->origins[i]));
}

static int parse_ws_origins(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_ws_conf *ws = base;
    char p[PATH_LEN], vb[SHOW_LEN], canon[ORIGIN_LEN];
    size_t i = 0;
    int any = 0;

    if (expect(l, v, N_SEQ, path))
        return -1;
    /* A route's list replaces the copy of the top level's that the route started with. */
    ws_free_origins(ws);
    ws->origins = v->nkids > 0 ? gw_xcalloc(v->nkids, sizeof *ws->origins) : NULL;
    for (const struct node *e = v->first; e != NULL; e = e->next, i++) {
        const char *s;
        size_t len;

        join_idx(p, path, i);
        if (get_str(l, e, p, &s, &len))
            return -1;
        show(vb, s, len);
        if (len == 1 && s[0] == '*') {
            any = 1;
            continue;
        }
        switch (canon_origin(s, len, canon)) {
        case ORIGIN_OK:
            break;
        case ORIGIN_BAD:
            return fail(l, e, p,
                        "invalid origin '%s' (expected \"*\", http://HOST[:PORT] or "
                        "https://HOST[:PORT])",
                        vb);
        case ORIGIN_PORT:
            return fail(l, e, p, "invalid port in origin '%s' (expected 1..65535)", vb);
        case ORIGIN_SLASH:
            return fail(l, e, p,
                        "origin '%s' must not end with '/' (browsers send scheme://host[:port], "
                        "with no path)",
                        vb);
        case ORIGIN_PATH:
            return fail(l, e, p,
                        "origin '%s' must not have a path, query or fragment (browsers send "
                        "scheme://host[:port] only)",
                        vb);
        }
        ws->origins[ws->norigins++] = gw_xstrndup(canon, strlen(canon));
    }
    /* With "*" the gateway never reads the list: keep none rather than entries that look like
     * they restrict something. */
    if (any)
        ws_free_origins(ws);
    ws->any_origin = any;
    return 0;
}

static const struct field ws_fields[] = {
    {.key = "ping_interval",
     .kind = F_DURATION,
     AT(struct gw_ws_conf, ping_interval_ms),
     .min = 0,
     .max = DUR_MAX},
    {.key = "ping_timeout",
     .kind = F_DURATION,
     AT(struct gw_ws_conf, ping_timeout_ms),
     .min = 0,
     .max = DUR_MAX},
    {.key = "close_timeout",
     .kind = F_DURATION,
     AT(struct gw_ws_conf, close_timeout_ms),
     .min = 1,
     .max = DUR_MAX},
    {.key = "max_message",
     .kind = F_SIZE,
     AT(struct gw_ws_conf, max_message),
     .min = 1,
     .max = GIB},
    {.key = "origins", .kind = F_FN, .fn = parse_ws_origins},
    {.key = "deflate", .kind = F_BOOL, AT(struct gw_ws_conf, deflate)},
    /* RFC 7692 allows 8, but zlib (since 1.2.9) refuses an 8-bit window for raw deflate. */
    {.key = "deflate_window_bits",
     .kind = F_UINT,
     AT(struct gw_ws_conf, deflate_window_bits),
     .min = 9,
     .max = 15},
    {.key = "deflate_no_context_takeover",
     .kind = F_BOOL,
     AT(struct gw_ws_conf, deflate_no_context_takeover)},
};

_Static_assert(GW_ARRAY_LEN(ws_fields) <= MAX_FIELDS, "raise MAX_FIELDS");

/* The value of |key| in mapping |m|, whose keys walk_map() has checked, or NULL. */
static const struct node *map_value(const struct node *m, const char *key)
{
    for (const struct node *k = m->first; k != NULL; k = k->next->next)
        if (strlen(key) == k->len && memcmp(key, k->str, k->len) == 0)
            return k->next;
    return NULL;
}

/* Walks websocket mapping |v| over |ws|, which holds the defaults or the top level's values,
 * then checks the keys that depend on each other on the result. */
static int parse_ws(struct loader *l, const struct node *v, const char *path, struct gw_ws_conf *ws)
{
    const struct node *at;
    char p[PATH_LEN], db[32];

    if (walk_map(l, v, path, ws_fields, GW_ARRAY_LEN(ws_fields), ws))
        return -1;
    if (ws->ping_interval_ms == 0 || ws->ping_timeout_ms > 0)
        return 0;
    fmt_duration(db, sizeof db, ws->ping_interval_ms);
    at = map_value(v, "ping_timeout");
    if (at != NULL) {
        join(p, path, "ping_timeout", strlen("ping_timeout"));
        return fail(l, at, p,
                    "must be more than 0 while ping_interval is %s (ping_interval: 0 turns pings "
                    "off)",
                    db);
    }
    /* The values this map started from passed this check (the defaults do), so without
     * ping_timeout here it is ping_interval that made the pair wrong: a route's, over a top
     * level that turned pings off. */
    at = map_value(v, "ping_interval");
    join(p, path, "ping_interval", strlen("ping_interval"));
    return fail(l, at, p,
                "%s needs a ping_timeout more than 0 (the top level's is 0s): set one here", db);
}

static int parse_top_ws(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_config *c = base;

    return parse_ws(l, v, path, &c->websocket);
}

static int parse_route_ws(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_route_conf *r = base;

    return parse_ws(l, v, path, &r->ws);
}

static const struct field match_fields[] = {
    {.key = "host", .kind = F_FN, .fn = parse_route_host},
    {.key = "path", .kind = F_FN, .fn = parse_route_path},
};

static const struct field route_sse_fields[] = {
    {.key = "heartbeat",
     .kind = F_DURATION,
     AT(struct gw_route_conf, sse_heartbeat_ms),
     .min = 0,
     .max = DUR_MAX},
};

static const struct field route_fields[] = {
    {.key = "match", .kind = F_MAP, SUB(match_fields)},
    {.key = "upstream", .kind = F_FN, .required = 1, .fn = parse_route_upstream},
    {.key = "strip_prefix", .kind = F_BOOL, AT(struct gw_route_conf, strip_prefix)},
    {.key = "sse", .kind = F_MAP, SUB(route_sse_fields)},
    {.key = "websocket", .kind = F_FN, .fn = parse_route_ws},
};

_Static_assert(GW_ARRAY_LEN(route_fields) <= MAX_FIELDS, "raise MAX_FIELDS");

static int parse_routes(struct loader *l, const struct node *v, const char *path, void *base)
{
    struct gw_config *c = base;
    struct dupkey *keys;
    const struct node *e;
    char p[PATH_LEN];
    size_t i = 0, dup, orig;

    if (nonempty_seq(l, v, path, "route"))
        return -1;
    c->routes = gw_xcalloc(v->nkids, sizeof *c->routes);
    for (e = v->first; e != NULL; e = e->next, i++) {
        struct gw_route_conf *r = &c->routes[c->nroutes++];

        r->index = i;
        r->sse_heartbeat_ms = c->sse.heartbeat_ms; /* "sse" is parsed before "routes" */
        r->ws = c->websocket;                      /* and so is "websocket" */
        ws_copy_origins(&r->ws, &c->websocket);
        join_idx(p, path, i);
        if (walk_map(l, e, p, route_fields, GW_ARRAY_LEN(route_fields), r))
            return -1;
        if (r->path == NULL) {
            r->path = gw_xstrndup("/", 1);
            r->path_len = 1;
        }
    }
    /* The router's last tie-break is file order: a second identical route could never win. */
    keys = arena_alloc(&l->arena, c->nroutes * sizeof *keys);
    for (i = 0; i < c->nroutes; i++) {
        const struct gw_route_conf *r = &c->routes[i];

        keys[i] = (struct dupkey){.a = r->host,
                                  .alen = r->host ? strlen(r->host) : 0,
                                  .b = r->path,
                                  .blen = r->path_len,
                                  .idx = i};
    }
    if (!first_dup(keys, c->nroutes, &dup, &orig))
        return 0;
    for (e = v->first, i = 0; i < dup; i++)
        e = e->next;
    join_idx(p, path, dup);
    return fail(l, e, p, "duplicate route (same host and path as %s[%zu])", path, orig);
}

static const char *const access_names[] = {"off", "json"};
static const char *const level_names[] = {"debug", "info", "warn", "error"};

static const struct field sse_fields[] = {
    {.key = "heartbeat",
     .kind = F_DURATION,
     AT(struct gw_config, sse.heartbeat_ms),
     .min = 0,
     .max = DUR_MAX},
};

static const struct field limits_fields[] = {
    {.key = "header_bytes",
     .kind = F_SIZE,
     AT(struct gw_config, limits.header_bytes),
     .min = KIB,
     .max = 16 * MIB},
    {.key = "headers",
     .kind = F_UINT,
     AT(struct gw_config, limits.headers),
     .min = 1,
     .max = 10000},
    {.key = "target_bytes",
     .kind = F_SIZE,
     AT(struct gw_config, limits.target_bytes),
     .min = 1,
     .max = 16 * MIB},
    {.key = "body_bytes",
     .kind = F_SIZE,
     AT(struct gw_config, limits.body_bytes),
     .min = 0,
     .max = UINT64_MAX},
};

static const struct field timeout_fields[] = {
    {.key = "header",
     .kind = F_DURATION,
     AT(struct gw_config, timeouts.header_ms),
     .min = 1,
     .max = DUR_MAX},
    {.key = "body",
     .kind = F_DURATION,
     AT(struct gw_config, timeouts.body_ms),
     .min = 1,
     .max = DUR_MAX},
    {.key = "idle",
     .kind = F_DURATION,
     AT(struct gw_config, timeouts.idle_ms),
     .min = 1,
     .max = DUR_MAX},
    {.key = "send",
     .kind = F_DURATION,
     AT(struct gw_config, timeouts.send_ms),
     .min = 1,
     .max = DUR_MAX},
};

static const struct field shutdown_fields[] = {
    {.key = "delay",
     .kind = F_DURATION,
     AT(struct gw_config, shutdown.delay_ms),
     .min = 0,
     .max = DUR_MAX},
    {.key = "timeout",
     .kind = F_DURATION,
     AT(struct gw_config, shutdown.timeout_ms),
     .min = 0,
     .max = DUR_MAX},
};

static int parse_admin_address(struct loader *l, const struct node *v, const char *path,
                               void *base)
{
    struct gw_config *c = base;

    free(c->admin.address);
    c->admin.address = NULL;
    c->admin.backlog = 64;
    return parse_listen_address(l, v, path, &c->admin);
}

static const struct field admin_fields[] = {
    {.key = "address", .kind = F_FN, .required = 1, .fn = parse_admin_address},
};

static const struct field log_fields[] = {
    {.key = "access",
     .kind = F_ENUM,
     AT(struct gw_config, log.access),
     NAMES(access_names),
     .expected = "json or off"},
    {.key = "level",
     .kind = F_ENUM,
     AT(struct gw_config, log.level),
     NAMES(level_names),
     .expected = "debug, info, warn or error"},
    {.key = "access_buffer",
     .kind = F_SIZE,
     AT(struct gw_config, log.access_buffer),
     .min = KIB,
     .max = 64 * MIB},
    {.key = "access_flush",
     .kind = F_DURATION,
     AT(struct gw_config, log.access_flush_ms),
     .min = 1,
     .max = DUR_MAX},
};

static const struct field http2_fields[] = {
    {.key = "max_concurrent_streams",
     .kind = F_UINT,
     AT(struct gw_config, http2.max_concurrent_streams),
     .min = 1,
     .max = 1000},
    {.key = "window",
     .kind = F_SIZE,
     AT(struct gw_config, http2.window),
     .min = 16 * KIB,
     .max = 16 * MIB},
    {.key = "connection_window",
     .kind = F_SIZE,
     AT(struct gw_config, http2.connection_window),
     .min = 64 * KIB,
     .max = 64 * MIB},
};

static const struct field resolver_fields[] = {
    {.key = "nameservers", .kind = F_FN, .fn = parse_nameservers},
};

/* Table order is the order values are parsed in, whatever the file's: upstreams, sse and
 * websocket before routes. */
static const struct field top_fields[] = {
    {.key = "workers", .kind = F_FN, .fn = parse_workers},
    {.key = "listen", .kind = F_FN, .required = 1, .fn = parse_listen},
    {.key = "limits", .kind = F_MAP, SUB(limits_fields)},
    {.key = "timeouts", .kind = F_MAP, SUB(timeout_fields)},
    {.key = "shutdown", .kind = F_MAP, SUB(shutdown_fields)},
    {.key = "admin", .kind = F_MAP, SUB(admin_fields)},
    {.key = "trusted_proxies", .kind = F_FN, .fn = parse_trusted},
    {.key = "log", .kind = F_MAP, SUB(log_fields)},
    {.key = "resolver", .kind = F_MAP, SUB(resolver_fields)},
    {.key = "http2", .kind = F_MAP, SUB(http2_fields)},
    {.key = "sse", .kind = F_MAP, SUB(sse_fields)},
    {.key = "websocket", .kind = F_FN, .fn = parse_top_ws},
    {.key = "upstreams", .kind = F_FN, .required = 1, .fn = parse_upstreams},
    {.key = "routes", .kind = F_FN, .required = 1, .fn = parse_routes},
};

_Static_assert(GW_ARRAY_LEN(top_fields) <= MAX_FIELDS, "raise MAX_FIELDS");

/* ---- snapshot ---- */

static struct gw_config *config_new(const char *name)
{
    struct gw_config *c = gw_xcalloc(1, sizeof *c);

    atomic_init(&c->refs, 1);
    c->file = gw_xstrndup(name, strlen(name));
    c->workers = auto_workers();
    c->limits.header_bytes = 16 * KIB;
    c->limits.headers = 100;
    c->http2.max_concurrent_streams = 128;
    c->http2.window = 256 * KIB;
    c->http2.connection_window = MIB;
    c->limits.target_bytes = 8 * KIB;
    c->limits.body_bytes = 10 * MIB;
    c->timeouts.header_ms = 10 * MS_S;
    c->timeouts.body_ms = 30 * MS_S;
    c->timeouts.idle_ms = 60 * MS_S;
    c->timeouts.send_ms = 60 * MS_S;
    c->shutdown.delay_ms = 0;
    c->shutdown.timeout_ms = 30 * MS_S;
    c->log.access = GW_ACCESS_JSON;
    c->log.level = GW_LOG_INFO;
    c->log.access_buffer = 64 * KIB;
    c->log.access_flush_ms = MS_S;
    c->sse.heartbeat_ms = 15 * MS_S;
    c->websocket.ping_interval_ms = 30 * MS_S;
    c->websocket.ping_timeout_ms = 10 * MS_S;
    c->websocket.close_timeout_ms = 5 * MS_S;
    c->websocket.max_message = MIB;
    c->websocket.any_origin = 1;
    c->websocket.deflate = 1;
    c->websocket.deflate_window_bits = 15;
    c->websocket.deflate_no_context_takeover = 0;
    return c;
}

/* Frees |c| whole or half-built: every array's count covers exactly the entries started. */
static void config_free(struct gw_config *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nlisten; i++) {
        struct gw_tls_conf *t = c->listen[i].tls;

        free(c->listen[i].address);
        if (t == NULL)
            continue;
        if (t->ctx != NULL)
            t->ctx_free(t->ctx);
        for (size_t j = 0; j < t->ncerts; j++) {
            free(t->certs[j].cert.path);
            free(t->certs[j].key.path);
        }
        free(t->certs);
        free(t->client_ca.path);
        free(t);
    }
    free(c->listen);
    free(c->admin.address);
    free(c->trusted);
    for (size_t i = 0; i < c->resolver.nnameservers; i++)
        free(c->resolver.nameservers[i]);
    free(c->resolver.nameservers);
    ws_free_origins(&c->websocket);
    for (size_t i = 0; i < c->nupstreams; i++) {
        struct gw_upstream_conf *u = &c->upstreams[i];

        for (size_t j = 0; j < u->nservers; j++) {
            free(u->servers[j].address);
            free(u->servers[j].host);
            free(u->servers[j].unix_path);
        }
        free(u->servers);
        free(u->buffer_dir);
        free(u->name);
    }
    free(c->upstreams);
    for (size_t i = 0; i < c->nroutes; i++) {
        free(c->routes[i].host);
        free(c->routes[i].path);
        ws_free_origins(&c->routes[i].ws);
    }
    free(c->routes);
    free(c->file);
    free(c);
}

int gw_config_load_buffer(const char *name, const char *data, size_t len, struct gw_config **out,
                          char *err, size_t errlen)
{
    struct loader l = {.name = name != NULL ? name : "<config>",
                       .data = data != NULL ? data : "",
                       .len = data != NULL ? len : 0,
                       .err = err,
                       .errlen = errlen};
    struct node *root;
    int rc;

    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (l.len > CFG_MAX_BYTES) {
        fail_file(&l, "too large (%zu bytes, limit %zu MiB)", l.len, CFG_MAX_BYTES >> 20);
        return GW_E_CONFIG;
    }
    l.c = config_new(l.name);
    rc = build_tree(&l, &root);
    if (rc == 0) {
        if (root == NULL || is_null(root))
            rc = fail_mark(&l, root ? root->line : 1, root ? root->col : 1,
                           "empty configuration (expected a mapping with listen, upstreams and "
                           "routes)");
        else
            rc = walk_map(&l, root, "", top_fields, GW_ARRAY_LEN(top_fields), l.c);
    }
    arena_free(&l.arena);
    if (rc != 0) {
        config_free(l.c);
        return GW_E_CONFIG;
    }
    *out = l.c;
    return 0;
}

int gw_config_load_file(const char *path, struct gw_config **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;
    int rc;

    *out = NULL;
    if (f == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return GW_E_CONFIG;
    }
    /* One byte more than the cap tells "too large" from "exactly at the cap". */
    buf = gw_xmalloc(CFG_MAX_BYTES + 1);
    n = fread(buf, 1, CFG_MAX_BYTES + 1, f);
    if (ferror(f)) {
        int e = errno;

        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(e));
        fclose(f);
        free(buf);
        return GW_E_CONFIG;
    }
    fclose(f);
    if (n > CFG_MAX_BYTES) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: too large (more than %zu MiB)", path, CFG_MAX_BYTES >> 20);
        free(buf);
        return GW_E_CONFIG;
    }
    rc = gw_config_load_buffer(path, buf, n, out, err, errlen);
    free(buf);
    return rc;
}

struct gw_config *gw_config_ref(struct gw_config *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void gw_config_unref(struct gw_config *c)
{
    if (c == NULL)
        return;
    /* acq_rel: the last owner must see every write made while others still held it. */
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        config_free(c);
}

static int cidr_match(const struct gw_cidr *r, const uint8_t *a)
{
    unsigned full = r->prefix / 8, rest = r->prefix % 8;

    if (memcmp(r->addr, a, full) != 0)
        return 0;
    return rest == 0 || (a[full] & (uint8_t)(0xff00u >> rest)) == r->addr[full];
}

int gw_config_is_trusted(const struct gw_config *c, const struct sockaddr *sa)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    uint8_t v6[16];
    int is_v4;

    if (c == NULL || sa == NULL)
        return 0;
    /* Compare the IPv6 form with IPv6 entries and, for IPv4 and ::ffff:a.b.c.d peers (what a
     * dual-stack socket reports), the last 4 bytes with IPv4 entries. */
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in sin;

        memcpy(&sin, sa, sizeof sin);
        memcpy(v6, mapped, sizeof mapped);
        memcpy(v6 + 12, &sin.sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 sin6;

        memcpy(&sin6, sa, sizeof sin6);
        memcpy(v6, &sin6.sin6_addr, 16);
    } else {
        return 0;
    }
    is_v4 = memcmp(v6, mapped, sizeof mapped) == 0;
    for (size_t i = 0; i < c->ntrusted; i++) {
        const struct gw_cidr *r = &c->trusted[i];

        if (r->family == AF_INET6 && cidr_match(r, v6))
            return 1;
        if (r->family == AF_INET && is_v4 && cidr_match(r, v6 + 12))
            return 1;
    }
    return 0;
}
