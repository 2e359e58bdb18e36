# SPDX-License-Identifier: MIT
"""The app side of gatehouse: run a WSGI app as a pool of blocking workers speaking uwsgi
(``python3 -m gatehouse.wsgi module:app``). Standard library only."""

__version__ = "0.1.0"
