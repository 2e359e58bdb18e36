/* SPDX-License-Identifier: MIT */
/* WebSocket-over-HTTP: a client's WebSocket, terminated at the gateway, carried to a blocking
 * (uwsgi) pool as a series of short POSTs of application/websocket-events (Pushpin's format,
 * gateway/woh_codec.h), one in flight per WebSocket, so that no worker is held between
 * messages. The session is the WebSocket exchange's upstream; each POST is an exchange of its
 * own (gw_exchange_new_call()) through the route's uwsgi driver, its queue and limits
 * included. Once the client has left, the session lives on as a worker task until the app has
 * been told. The protocol as the app sees it: adapters/uwsgi/WEBSOCKET.md. */
#ifndef GW_WOH_H
#define GW_WOH_H

#include "gateway/exchange.h"

extern const struct gw_upstream_ops gw_woh_upstream_ops;

#endif
