/* SPDX-License-Identifier: MIT */
/* Route matching: (host, path prefix) -> route -> upstream. Pure functions over the snapshot. */
#ifndef GW_ROUTER_H
#define GW_ROUTER_H

#include <stddef.h>

#include "config/config.h"

/* Returns the route for a request to |host| (the authority, maybe with ":port", any case;
 * NULL or empty when the request had none) and |path| (starts with '/', the query may follow
 * after '?'), or NULL when none matches (404). Among routes whose host and prefix both match,
 * the most specific host wins (exact, then the longest wildcard suffix, then any host), then
 * the longest prefix, then the earliest route in the file. A prefix matches on segment
 * boundaries: "/api" matches "/api", "/api/x" and "/api?q", never "/apix". "*.example.com"
 * matches "a.example.com" and "a.b.example.com", not "example.com". */
const struct gw_route_conf *gw_route_match(const struct gw_config *c, const char *host,
                                           size_t host_len, const char *path, size_t path_len);

/* Writes into |out| (|cap| bytes) the path to send upstream for |path| on route |r|: the path
 * itself, or with the route's prefix removed when strip_prefix is set ("/api/x?q" -> "/x?q",
 * "/api" -> "/", "/api?q" -> "/?q"). Returns the length written, or 0 when |cap| is too small.
 * |path| must be one that gw_route_match() matched to |r|. */
size_t gw_route_upstream_path(const struct gw_route_conf *r, const char *path, size_t path_len,
                              char *out, size_t cap);

/* Returns 1 when |path| is safe to route: starts with '/', and has no "." or ".." segment, in
 * plain or percent-encoded form (%2e), before the query. Else 0 (the gateway answers 400). */
int gw_path_is_safe(const char *path, size_t path_len);

#endif
