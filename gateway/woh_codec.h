/* SPDX-License-Identifier: MIT */
/* WebSocket-over-HTTP events (the application/websocket-events format of Pushpin), sans-I/O:
 * the bodies of the short requests the gateway makes to a blocking app for a WebSocket, and of
 * their responses. An event is "NAME[ SIZE]\r\n" then, when SIZE (hexadecimal) is given, SIZE
 * bytes of content and "\r\n". Bytes in, events out; no allocation, no I/O. See
 * adapters/uwsgi/WEBSOCKET.md for the whole protocol. */
#ifndef GW_WOH_CODEC_H
#define GW_WOH_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define WOH_CONTENT_TYPE "application/websocket-events"

enum woh_type {
    WOH_OPEN = 0,
    WOH_TEXT,
    WOH_BINARY,
    WOH_PING,
    WOH_PONG,
    WOH_CLOSE,
    WOH_DISCONNECT,
};

/* The longest event line: "DISCONNECT" or "BINARY", a space, 16 hex digits, CRLF. */
#define WOH_LINE_MAX 32

/* Writes the line of an event of |type| with |len| bytes of content into |out| and returns its
 * length. An event without content (|len| 0 and not TEXT, BINARY or CLOSE) is the bare name.
 * Content, when there is a size, must be followed by woh_event_end(). */
size_t woh_event_line(char out[WOH_LINE_MAX], enum woh_type type, size_t len);

/* "\r\n", the end of an event's content. */
#define WOH_EVENT_END "\r\n"

/* The event's name ("TEXT"), for logs. */
const char *woh_type_name(enum woh_type type);

/* ---- input ------------------------------------------------------------------------------ */

/* Largest CLOSE content taken: the code and a reason that fits a close frame (RFC 6455 §5.5). */
#define WOH_CLOSE_MAX 125

/* Decoder state, zeroed before use (one per body). */
struct woh_in {
    uint8_t phase;                 /* where in an event the input stands */
    uint8_t type;                  /* enum woh_type of the current event */
    uint8_t linelen;
    uint8_t started;               /* TEXT/BINARY: the first piece went out */
    uint8_t ctllen;
    char line[WOH_LINE_MAX];       /* the event line so far */
    uint8_t ctl[WOH_CLOSE_MAX];    /* CLOSE content, collected whole */
    uint64_t left;                 /* content bytes still to come */
};

enum woh_in_result {
    WOH_IN_NEED = 0,   /* every byte given was used; more input is needed */
    WOH_IN_EVENT,      /* a whole event without streamed content: OPEN, PING, PONG,
                          DISCONNECT (content, if any, skipped), CLOSE (|code|, |data| the
                          reason) */
    WOH_IN_DATA,       /* a piece of a TEXT or BINARY event's content (|first|, |fin|) */
    WOH_IN_ERROR,      /* malformed input (|why|): stop */
};

struct woh_in_event {
    enum woh_type type;
    const uint8_t *data;           /* DATA: a slice of the input; CLOSE: the reason, in the
                                      decoder's state (valid until the next call) */
    size_t len;
    unsigned code;                 /* CLOSE: the code; 1005 when the content is empty */
    int first, fin;                /* DATA: first and last piece of the message (a message of
                                      size 0 is one piece with both) */
    const char *why;               /* ERROR: a static reason */
};

/* Decodes from |p[0..n)|, setting |*used| to the bytes consumed, and returns what was found.
 * Call again with the rest after any result but WOH_IN_NEED and WOH_IN_ERROR. Errors: an
 * unknown event name, a size that is not hexadecimal or over 16 digits, a line over
 * WOH_LINE_MAX, content not followed by CRLF, a CLOSE of 1 byte or over WOH_CLOSE_MAX. */
enum woh_in_result woh_in_next(struct woh_in *d, const uint8_t *p, size_t n, size_t *used,
                               struct woh_in_event *ev);

/* Returns 1 when the input ended between two events (a body may end only there). */
int woh_in_done(const struct woh_in *d);

#endif
