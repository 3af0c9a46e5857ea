# etcdseal - top-level build. `make` builds build/etcdseal; `make test` runs every test;
# `make run` starts a local etcd and etcdseal; `make sanitize` runs unit + integration tests
# against an ASan+UBSan build; `make fuzz` runs the libFuzzer targets; `make bench` measures.
BUILD    ?= build
CC       ?= cc
SAN      ?=
OPT      ?= -O2
PKGS     := libnghttp2 libevent libevent_openssl libevent_pthreads libssl libcrypto libsodium \
            yaml-0.1 libprotobuf-c grpc
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
GEN      := $(BUILD)/gen
CPPFLAGS += -D_GNU_SOURCE -Isrc -I$(GEN) -Itests/unit $(PKG_CFLAGS)
# snprintf truncation of diagnostics is intended, so that warning is off.
CFLAGS   += -std=c11 -Wall -Wextra -Werror -Wno-format-truncation -g $(OPT) -fno-omit-frame-pointer $(SAN) -MMD -MP
LDFLAGS  += $(SAN) -Wl,--as-needed
LDLIBS   += $(PKG_LIBS) -lpthread -lm

PROTOS   := $(shell find proto -name '*.proto' | sort)
PROTO_C  := $(patsubst proto/%.proto,$(GEN)/%.pb-c.c,$(PROTOS))
PROTO_H  := $(PROTO_C:.c=.h)
PROTO_O  := $(patsubst $(GEN)/%.c,$(BUILD)/obj/gen/%.o,$(PROTO_C))

LIB_SRC  := $(shell find src -name '*.c' -not -path 'src/cmd/*' | sort)
CMD_SRC  := $(shell find src/cmd -name '*.c' | sort)
LIB_O    := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC))
CMD_O    := $(patsubst %.c,$(BUILD)/obj/%.o,$(CMD_SRC))
LIB      := $(BUILD)/libetcdseal.a
BIN      := $(BUILD)/etcdseal

UNIT_SRC := $(sort $(wildcard tests/unit/*_test.c))
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
TOOL_SRC := $(sort $(wildcard tests/tools/*.c))
TOOL_BIN := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(TOOL_SRC))

.PHONY: all deps test test-unit test-integration sanitize sanitize-unit run clean fuzz \
        fuzz-smoke bench bench-quick bench-relay bench-crypto format tests tools test-faults
.DEFAULT_GOAL := all
# generated protobuf sources are real outputs, not intermediates make may delete
.SECONDARY: $(PROTO_C) $(PROTO_H)

SHARED   ?= ../shared
all: $(BIN) tests tools
# C tests read the Kubernetes vectors as TSV (tests/vectors/to_tsv.py); fixed path for all builds.
tests: $(UNIT_BIN) build/vectors.tsv
build/vectors.tsv: $(SHARED)/vectors/k8s-vectors.json tests/vectors/to_tsv.py
	@mkdir -p build
	python3 tests/vectors/to_tsv.py $< > $@.tmp && mv $@.tmp $@
tools: $(TOOL_BIN)

deps:
	@scripts/install-deps.sh --check >/dev/null 2>&1 || scripts/install-deps.sh

$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -Iproto $<

# Generated code: same warnings, minus the ones protoc-c's output trips.
$(BUILD)/obj/gen/%.o: $(GEN)/%.c $(PROTO_H)
	@mkdir -p $(dir $@)
	@echo '  CC      $<'; $(CC) $(CPPFLAGS) $(CFLAGS) -Wno-unused-parameter -c -o $@ $<

$(BUILD)/obj/%.o: %.c $(PROTO_H)
	@mkdir -p $(dir $@)
	@echo '  CC      $<'; $(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(LIB): $(LIB_O) $(PROTO_O)
	@rm -f $@
	@echo '  AR      $@'; ar rcs $@ $^

$(BIN): $(CMD_O) $(LIB)
	@echo '  LD      $@'; $(CC) $(LDFLAGS) -o $@ $(CMD_O) $(LIB) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	@echo '  LD      $@'; $(CC) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

$(BUILD)/tools/%: $(BUILD)/obj/tests/tools/%.o $(LIB)
	@mkdir -p $(dir $@)
	@echo '  LD      $@'; $(CC) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

# ---------------------------------------------------------------- tests
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all
ASAN_ENV   := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

test: deps
	$(MAKE) all
	$(MAKE) BUILD=build-asan SAN="$(ASAN_FLAGS)" OPT=-O1 all
	$(MAKE) fuzz-build
	$(ASAN_ENV) FUZZ_RUNS=100000 FUZZ_SEED=1 FUZZ_TIME=120 \
	  tests/run-tests.sh --unit $(BUILD)/tests --unit build-asan/tests \
	  --script tests/fuzz/smoke.sh --integration

test-unit: all
	tests/run-tests.sh --unit $(BUILD)/tests

test-integration: all
	tests/run-tests.sh --integration

# the fault suite: every tests/faults/*_fault.sh (a fast subset runs in the integration tests)
test-faults: all
	tests/run-tests.sh $(patsubst %,--script %,$(wildcard tests/faults/*_fault.sh))

# soak: mixed load on real etcd for SOAK_SECONDS (600); RSS/fds/threads growth verdict
.PHONY: soak
soak: all
	SOAK_SECONDS=$(or $(SOAK_SECONDS),600) bash tests/soak/soak.sh

sanitize: deps
	$(MAKE) BUILD=build-asan SAN="$(ASAN_FLAGS)" OPT=-O1 all
	$(ASAN_ENV) ETCDSEAL_BIN=build-asan/etcdseal ETCDSEAL_TOOLS=build-asan/tools \
	  tests/run-tests.sh --unit build-asan/tests --integration

# ---------------------------------------------------------------- fuzzing (clang libFuzzer)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/*_fuzz.c))
FUZZ_BIN := $(patsubst tests/fuzz/%.c,build-fuzz/%,$(FUZZ_SRC))
FUZZ_TIME ?= 20
.PHONY: fuzz-build
fuzz-build:
	@if [ -n "$(FUZZ_SRC)" ]; then $(MAKE) BUILD=build-fuzz CC=clang OPT=-O1 \
	  SAN="-fsanitize=fuzzer-no-link,address,undefined -Wno-unknown-warning-option" build-fuzz/libetcdseal.a $(FUZZ_BIN); fi

build-fuzz/%_fuzz: tests/fuzz/%_fuzz.c build-fuzz/libetcdseal.a
	clang $(CPPFLAGS) -std=c11 -Wno-unknown-warning-option -g -O1 -fsanitize=fuzzer,address,undefined -o $@ $< \
	  build-fuzz/libetcdseal.a $(LDLIBS)

fuzz: fuzz-build
	FUZZ_TIME=$(FUZZ_TIME) bash tests/fuzz/smoke.sh

# ---------------------------------------------------------------- run / bench
run: deps
	$(MAKE) all
	scripts/run-local.sh

bench-crypto: all
	bench/bench-crypto.sh

bench: all
	bench/bench.sh

bench-quick: all
	QUICK=1 bench/bench.sh

bench-relay: all
	bench/bench-relay.sh

format:
	clang-format -i $$(find src tests -name '*.c' -o -name '*.h' | grep -v /gen/)

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
