# jisaku — two commands:
#   make demo   set everything up and run the whole system with simulated devices
#   make test   set everything up and run the tests
# As root they install the system packages they need with apt; otherwise they say what to install.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What the tests start for real: a Mosquitto broker (and mosquitto_sub, the benchmark's yardstick),
# a three-node RabbitMQ cluster, an InfluxDB server and a headless Chromium.
TEST_PACKAGES := mosquitto mosquitto-clients rabbitmq-server influxdb chromium fonts-ipafont-gothic
IS_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo yes)

.PHONY: demo test setup test-packages clean

demo: setup
	$(BIN)/jisaku demo

# The tests mostly wait (on brokers, outages, a browser), so three processes share the two cores
# of a small machine, a file to a process. The benchmarks compare speeds, so they run after, alone.
test: setup test-packages
	$(BIN)/python -m pytest -n 3 --dist loadfile --ignore-glob='tests/test_bench*.py'
	$(BIN)/python -m pytest tests/test_bench.py tests/test_bench_counter.py tests/test_bench_images.py tests/test_bench_web.py

setup: $(VENV)/.installed node_modules/.package-lock.json

# Browser files the dashboard serves itself (charts, the Japanese font, PMTiles), from npm.
node_modules/.package-lock.json: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the map's chart and font files: sudo apt-get install npm"; exit 1; }
	npm ci --no-audit --no-fund

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "jisaku needs Python 3.11 or newer (Debian 12 / Ubuntu 24.04 have it): sudo apt-get install python3")'
	@if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
	  if [ "$(IS_ROOT)" = yes ]; then apt-get update -qq && apt-get install -y -qq python3-venv; \
	  else echo "Python cannot make virtual environments here. Install: sudo apt-get install python3-venv"; exit 1; fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all,test]'
	@touch $@

test-packages:
	@missing=""; \
	[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || missing="$$missing mosquitto"; \
	command -v mosquitto_sub >/dev/null || missing="$$missing mosquitto-clients"; \
	[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing="$$missing rabbitmq-server"; \
	[ -x /usr/bin/influxd ] || command -v influxd >/dev/null || missing="$$missing influxdb"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	[ -f /usr/share/fonts/opentype/ipafont-gothic/ipag.ttf ] || missing="$$missing fonts-ipafont-gothic"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$(IS_ROOT)" != yes ]; then \
	  echo "The tests need:$$missing. Install them with: sudo apt-get install$$missing"; exit 1; \
	fi; \
	echo "Installing$$missing with apt-get"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	for service in mosquitto rabbitmq-server influxdb; do \
	  case "$$missing" in *$$service*) \
	    if command -v systemctl >/dev/null && systemctl is-active --quiet $$service 2>/dev/null; then \
	      echo "Stopping the $$service service apt just started: the tests start their own (and port 1883 is make demo's)."; \
	      systemctl disable --now $$service; \
	    fi;; \
	  esac; \
	done

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
