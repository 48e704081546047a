# meshwright: the commands a user runs. Everything lands in .venv; nothing needs root.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: venv collection test molecule bench lint clean demo demo-down

$(BIN)/meshwright: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/meshwright

## make collection: the collection meshwright.mesh as Ansible finds it from this clone (ansible.cfg's
## collections_path): plugins/ copied from modules/ and module_utils/ (tools/sync_collection.py), and
## .collections/ansible_collections/meshwright/mesh linked to this folder, so edits need no reinstall.
COLLECTION_LINK := .collections/ansible_collections/meshwright/mesh

collection: venv
	$(BIN)/python tools/sync_collection.py
	mkdir -p $(dir $(COLLECTION_LINK))
	ln -sfn ../../.. $(COLLECTION_LINK)

## make test: every test that needs no root daemon (unit, golden, real-Envoy integration)
test: collection
	$(BIN)/python -m pytest -q

## make molecule: the Molecule scenarios (default, ssh) on systemd hosts in Docker containers, then
## each scenario's time; needs a running Docker daemon and mmdebstrap (the hosts' image is built
## locally once). SCENARIOS="ssh" runs only those named.
SCENARIOS ?=

$(BIN)/molecule: pyproject.toml $(BIN)/meshwright
	$(BIN)/pip install --quiet -e '.[molecule]'
	touch $@

molecule: $(BIN)/molecule collection
	VENV=$(abspath $(VENV)) molecule/run.sh $(SCENARIOS)

## make bench: compile, load, validate/render of an estate, rendering every proxy, incremental recompile, deploy, data-plane, upgrade and control-plane benchmarks
## (tables with ratios; dataplane needs h2load)
bench: venv
	$(BIN)/python bench/compile.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/validate_estate.py
	$(BIN)/python bench/render_all.py
	$(BIN)/python bench/incremental.py
	$(BIN)/python bench/deploy.py
	$(BIN)/python bench/dataplane.py
	$(BIN)/python bench/upgrade.py
	$(BIN)/python bench/controlplane.py

## make lint: ansible-lint (production profile, .ansible-lint) on playbooks, roles and Molecule scenarios, then
## ansible-test sanity on the collection as built and installed (tools/collection_sanity.py; needs shellcheck)
$(BIN)/ansible-lint: pyproject.toml $(BIN)/meshwright
	$(BIN)/pip install --quiet -e '.[lint]'
	touch $@

# ansible-core 2.19 imports cryptography's DSA (its SSH agent code), which cryptography 47+ deprecates:
# a warning about Ansible's own import on every run, not about this collection.
LINT_ENV := PATH=$(abspath $(BIN)):$$PATH PYTHONWARNINGS="ignore:DSA is deprecated"

lint: $(BIN)/ansible-lint collection
	$(LINT_ENV) $(BIN)/ansible-lint --nocolor
	$(LINT_ENV) $(BIN)/python tools/collection_sanity.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .collections meshwright-mesh-*.tar.gz .cache/ansible-test-home

## make demo: the seed mesh deployed by ansible-playbook on inventories/local (this machine, no
## root); the gateway answers on 127.0.0.1:8080; state in state/local. Its proxies take their config
## from the control plane (meshwright serve, 127.0.0.1:15012) over xDS; DEMO_DELIVERY=files: from files.
ANSIBLE := ANSIBLE_CONFIG=$(CURDIR)/ansible.cfg $(BIN)/ansible-playbook
DEMO_DELIVERY ?= xds

demo: collection
	$(ANSIBLE) -i inventories/local meshwright.mesh.deploy -e mesh_delivery=$(DEMO_DELIVERY)
	$(ANSIBLE) -i inventories/local meshwright.mesh.telemetry
	$(BIN)/python examples/seed/show.py --delivery $(DEMO_DELIVERY)
	@echo "Prometheus (Istio's metrics): http://127.0.0.1:9090"

demo-down:
	@if [ -x $(BIN)/ansible-playbook ]; then $(ANSIBLE) -i inventories/local meshwright.mesh.telemetry -e telemetry_state=absent && $(ANSIBLE) -i inventories/local meshwright.mesh.uninstall; else echo "demo is not running"; fi
