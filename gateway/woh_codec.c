/* SPDX-License-Identifier: MIT */
/* WebSocket-over-HTTP events: see woh_codec.h. */
#include "gateway/woh_codec.h"

#include <string.h>

enum { P_LINE = 0, P_DATA, P_CLOSE, P_SKIP, P_CR, P_LF };

static const char *const names[] = {
    [WOH_OPEN] = "OPEN",   [WOH_TEXT] = "TEXT",   [WOH_BINARY] = "BINARY",
    [WOH_PING] = "PING",   [WOH_PONG] = "PONG",   [WOH_CLOSE] = "CLOSE",
    [WOH_DISCONNECT] = "DISCONNECT",
};

const char *woh_type_name(enum woh_type type)
{
    return (unsigned)type <= WOH_DISCONNECT ? names[type] : "?";
}

static int has_content(enum woh_type t)
{
    return t == WOH_TEXT || t == WOH_BINARY || t == WOH_CLOSE;
}

size_t woh_event_line(char out[WOH_LINE_MAX], enum woh_type type, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *name = woh_type_name(type);
    size_t n = strlen(name), digits = 1;

    memcpy(out, name, n);
    if (len > 0 || has_content(type)) {
        while (digits < 16 && (len >> (4 * digits)) != 0)
            digits++;
        out[n++] = ' ';
        for (size_t i = digits; i > 0; i--)
            out[n++] = hex[(len >> (4 * (i - 1))) & 0xf];
    }
    out[n++] = '\r';
    out[n++] = '\n';
    return n;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static enum woh_in_result fail(struct woh_in_event *ev, const char *why)
{
    ev->why = why;
    return WOH_IN_ERROR;
}

/* Parses the complete line d->line[0..linelen) (CRLF excluded): sets the type and size. */
static const char *parse_line(struct woh_in *d, int *sized)
{
    size_t n = d->linelen, name_len = n, digits;
    const char *sp = memchr(d->line, ' ', n);
    uint64_t v = 0;
    int t;

    if (sp != NULL)
        name_len = (size_t)(sp - d->line);
    for (t = WOH_OPEN; t <= WOH_DISCONNECT; t++)
        if (strlen(names[t]) == name_len && memcmp(names[t], d->line, name_len) == 0)
            break;
    if (t > WOH_DISCONNECT)
        return "unknown event";
    d->type = (uint8_t)t;
    *sized = sp != NULL;
    if (sp == NULL)
        return NULL;
    digits = n - name_len - 1;
    if (digits == 0 || digits > 16)
        return "bad event size";
    for (size_t i = name_len + 1; i < n; i++) {
        int h = hexval(d->line[i]);
        if (h < 0)
            return "bad event size";
        v = v << 4 | (uint64_t)h;
    }
    d->left = v;
    return NULL;
}

enum woh_in_result woh_in_next(struct woh_in *d, const uint8_t *p, size_t n, size_t *used,
                               struct woh_in_event *ev)
{
    size_t i = 0;

    memset(ev, 0, sizeof *ev);
    /* A sized CLOSE or contentless event of size 0 ("CLOSE 0", "OPEN 0") is whole with its
     * line: the loop runs once more for it when the line took the last byte given. Otherwise
     * the event came on the next call with nothing consumed, and a loop that stops when a call
     * consumes nothing (STYLE.md §9) would drop the rest of the body. */
    while (i < n || ((d->phase == P_CLOSE || d->phase == P_SKIP) && d->left == 0)) {
        switch (d->phase) {
        case P_LINE: {
            const char *why;
            int sized = 0;
            char ch = (char)p[i++];

            if (ch != '\n') {
                if (d->linelen >= WOH_LINE_MAX - 1) {
                    *used = i;
                    return fail(ev, "event line too long");
                }
                d->line[d->linelen++] = ch;
                break;
            }
            if (d->linelen == 0 || d->line[d->linelen - 1] != '\r') {
                *used = i;
                return fail(ev, "event line not ended by CRLF");
            }
            d->linelen--;
            why = parse_line(d, &sized);
            d->linelen = 0;
            if (why != NULL) {
                *used = i;
                return fail(ev, why);
            }
            if (!sized) {
                d->left = 0;
                if (d->type == WOH_TEXT || d->type == WOH_BINARY) {
                    /* "TEXT\r\n": an empty message, with no content section to follow. */
                    ev->type = (enum woh_type)d->type;
                    ev->first = ev->fin = 1;
                    ev->data = p + i;
                    *used = i;
                    return WOH_IN_DATA;
                }
                ev->type = (enum woh_type)d->type;
                ev->code = d->type == WOH_CLOSE ? 1005 : 0;
                ev->data = d->ctl;
                *used = i;
                return WOH_IN_EVENT;
            }
            if (d->type == WOH_CLOSE) {
                if (d->left == 1 || d->left > WOH_CLOSE_MAX) {
                    *used = i;
                    return fail(ev, "bad CLOSE size");
                }
                d->ctllen = 0;
                d->phase = P_CLOSE;
            } else if (d->type == WOH_TEXT || d->type == WOH_BINARY) {
                d->started = 0;
                d->phase = P_DATA;
                if (d->left == 0) {
                    d->phase = P_CR;
                    ev->type = (enum woh_type)d->type;
                    ev->first = ev->fin = 1;
                    ev->data = p + i;
                    *used = i;
                    return WOH_IN_DATA;
                }
            } else {
                d->phase = P_SKIP;
            }
            break;
        }
        case P_DATA: {
            size_t k = n - i < d->left ? n - i : (size_t)d->left;

            ev->type = (enum woh_type)d->type;
            ev->data = p + i;
            ev->len = k;
            ev->first = !d->started;
            d->started = 1;
            d->left -= k;
            i += k;
            ev->fin = d->left == 0;
            if (ev->fin)
                d->phase = P_CR;
            *used = i;
            return WOH_IN_DATA;
        }
        case P_CLOSE:
        case P_SKIP: {
            size_t k = n - i < d->left ? n - i : (size_t)d->left;

            if (d->phase == P_CLOSE) {
                memcpy(d->ctl + d->ctllen, p + i, k);
                d->ctllen = (uint8_t)(d->ctllen + k);
            }
            d->left -= k;
            i += k;
            if (d->left > 0)
                break;
            if (d->phase == P_SKIP) {
                d->phase = P_CR;
                ev->type = (enum woh_type)d->type;
                ev->data = d->ctl;
                *used = i;
                return WOH_IN_EVENT;
            }
            d->phase = P_CR;
            ev->type = WOH_CLOSE;
            ev->code = d->ctllen >= 2 ? (unsigned)d->ctl[0] << 8 | d->ctl[1] : 1005;
            ev->data = d->ctl + (d->ctllen >= 2 ? 2 : 0);
            ev->len = d->ctllen >= 2 ? d->ctllen - 2u : 0;
            *used = i;
            return WOH_IN_EVENT;
        }
        case P_CR:
            if (p[i++] != '\r') {
                *used = i;
                return fail(ev, "event content not followed by CRLF");
            }
            d->phase = P_LF;
            break;
        default: /* P_LF */
            if (p[i++] != '\n') {
                *used = i;
                return fail(ev, "event content not followed by CRLF");
            }
            d->phase = P_LINE;
            break;
        }
    }
    /* Every byte was used and no event is due: P_DATA with left 0 turns into P_CR above, and
     * P_CLOSE and P_SKIP with left 0 are finished by the loop. */
    *used = i;
    return WOH_IN_NEED;
}

int woh_in_done(const struct woh_in *d)
{
    return d->phase == P_LINE && d->linelen == 0;
}
