# SPDX-License-Identifier: MIT
# gatehouse build. `make` builds build/gatehouse; `make test` installs what is missing and runs
# every test; `make run` starts the demo. See README.md.

PKGS      := libevent libevent_openssl libevent_pthreads libnghttp2 openssl yaml-0.1 zlib
SAN       ?=
BUILD     ?= build$(if $(SAN),-san)
PYTHON    ?= /usr/bin/python3
CSTD      := -std=c17 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
WARN      := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
             -Wformat=2 -Wvla -Wnull-dereference -Wimplicit-fallthrough -Wundef -Wcast-qual
# Warnings are errors in CI (CI=true) or when asked (WERROR=1); local builds only warn.
WERROR    ?= $(if $(CI),1,)
CFLAGS    ?= -O2 -g
ifneq ($(SAN),)
  CFLAGS  += -O1 -fsanitize=$(SAN) -fno-sanitize-recover=all -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=$(SAN)
endif
PKGCFLAGS  = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKGLIBS    = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread
ALLCFLAGS  = $(CSTD) $(WARN) $(if $(WERROR),-Werror) $(CFLAGS) -MMD -MP -I. $(PKGCFLAGS)

LIBSRC    := $(filter-out gateway/main.c,$(wildcard gateway/*.c adapters/*/*.c config/*.c))
LIBOBJ    := $(LIBSRC:%.c=$(BUILD)/%.o)
TESTSRC   := $(wildcard tests/unit/*.c)
TESTOBJ   := $(TESTSRC:%.c=$(BUILD)/%.o)
FUZZSRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZBIN   := $(FUZZSRC:tests/fuzz/%.c=build-fuzz/%)
# Sources a fuzz target may link: the sans-I/O codecs and what they need.
FUZZLIB   := gateway/h1_parse.c gateway/util.c config/config.c gateway/router.c \
             adapters/uwsgi/uwsgi_codec.c adapters/asgi/asgi_codec.c gateway/ws_codec.c \
             gateway/woh_codec.c gateway/h2_codec.c
FUZZTIME  ?= 20

all: $(BUILD)/gatehouse

deps:
	@tools/deps.sh build

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALLCFLAGS) -c $< -o $@

$(BUILD)/libgatehouse.a: $(LIBOBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/gatehouse: $(BUILD)/gateway/main.o $(BUILD)/libgatehouse.a
	$(CC) $(LDFLAGS) $^ $(PKGLIBS) -o $@

$(BUILD)/unit: $(TESTOBJ) $(BUILD)/libgatehouse.a
	$(CC) $(LDFLAGS) $^ $(PKGLIBS) $(shell pkg-config --libs criterion) -o $@

# criterion forks per test and an LSan report does not fail the run: grep the log for it.
unit: $(BUILD)/unit
	@$(BUILD)/unit --jobs=2 2> $(BUILD)/unit.log; s=$$?; cat $(BUILD)/unit.log; \
	  if grep -q Sanitizer $(BUILD)/unit.log; then echo "unit: sanitizer report" >&2; exit 1; fi; \
	  exit $$s

integration: $(BUILD)/gatehouse
	GATEHOUSE_BIN=$(abspath $(BUILD)/gatehouse) $(PYTHON) -m pytest -q -p no:cacheprovider \
	  tests/integration

# The app side (adapters/python): its protocol against the shared vectors, gatehouse.wsgi
# against real uwsgi clients, and its compatibility with Debian's uWSGI.
python-tests:
	PYTHONPATH=$(abspath adapters/python) $(PYTHON) -m pytest -q -p no:cacheprovider tests/python

build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZLIB)
	@mkdir -p $(@D)
	clang $(CSTD) -g -O1 -fsanitize=fuzzer,address,undefined -I. $(PKGCFLAGS) $^ \
	  $(PKGLIBS) -o $@

# A short pass of every fuzz target over its corpus; `make fuzz FUZZTIME=600` runs longer.
fuzz: $(FUZZBIN)
	@set -e; for f in $(FUZZBIN); do \
	  n=$$(basename $$f); mkdir -p build-fuzz/corpus/$$n; \
	  echo "fuzz: $$n for $(FUZZTIME)s"; \
	  $$f -max_total_time=$(FUZZTIME) -print_final_stats=0 build-fuzz/corpus/$$n \
	    tests/fuzz/corpus/$$n > build-fuzz/$$n.log 2>&1 || { tail -40 build-fuzz/$$n.log; exit 1; }; \
	  tail -1 build-fuzz/$$n.log; \
	done

test:
	@tools/deps.sh test
	$(MAKE) all unit
	$(MAKE) integration
	$(MAKE) python-tests
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME)

asan:
	@tools/deps.sh test
	$(MAKE) SAN=address,undefined all unit integration

run:
	@tools/deps.sh run
	$(MAKE) all
	exec tools/demo.sh $(abspath $(BUILD)/gatehouse)

bench:
	@tools/deps.sh bench
	$(MAKE) all
	@st=0; \
	$(PYTHON) tests/bench/bench_http.py --gatehouse $(abspath $(BUILD)/gatehouse) || st=$$?; \
	$(PYTHON) tests/bench/bench_wsgi.py --gatehouse $(abspath $(BUILD)/gatehouse) || \
	    { s=$$?; [ $$s -gt $$st ] && st=$$s; }; \
	$(PYTHON) tests/bench/bench_asgi.py --gatehouse $(abspath $(BUILD)/gatehouse) || \
	    { s=$$?; [ $$s -gt $$st ] && st=$$s; }; \
	$(PYTHON) tests/bench/bench_ws.py --gatehouse $(abspath $(BUILD)/gatehouse) || \
	    { s=$$?; [ $$s -gt $$st ] && st=$$s; }; \
	$(PYTHON) tests/bench/bench_h2.py --gatehouse $(abspath $(BUILD)/gatehouse) --rounds 3 || \
	    { s=$$?; [ $$s -gt $$st ] && st=$$s; }; \
	exit $$st

# Builds the images of docker/, runs docker/compose.yaml, checks every demo route and a
# SIGTERM under load, tears it down (tools/container-test.sh). Needs docker or podman's Docker
# API and docker-compose; not part of `make test`.
container-test:
	tools/container-test.sh

clean:
	rm -rf build build-san build-fuzz

.PHONY: all deps unit integration python-tests fuzz test asan run bench container-test clean
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
