"""Build a Python step plugin into a sealed component.

    python -m runbook_sdk.build SRC.py -o OUT.wasm [--world WORLD] [--no-seal]

1. checks that the pinned componentize-py (`TOOLCHAIN`) is the one
   installed (`pip install componentize-py==VERSION`);
2. imports SRC with this Python to find its `Step` subclass (a module-level
   `STEP = MyStep`, or the one subclass it defines) and picks the narrowest
   world of `wit/plugin.wit` that has the interfaces the step needs
   (`world_interfaces`), unless `--world` names one;
3. runs `componentize-py -d plugin.wit -w WORLD componentize ...` over a
   generated entry module that exports the step;
4. seals the component with `runbook plugin seal` (the binary in
   `$RUNBOOK`, else `runbook` on PATH, else this checkout's
   `target/{release,debug}/runbook`), which loads it, calls `describe` and
   writes the `runbook:capabilities` section, so `runbook plugin inspect`
   and `runbook audit` read its capabilities without running it. With
   `--seal=section` (or `--seal=auto`, the default, when there is no
   `runbook` binary yet, as in `scripts/build-plugins` on a fresh machine,
   which builds the plugins before the host), the section is written
   directly from the step's declared capabilities, in the documented
   format; the host checks on every load that `describe` says the same.
"""

import argparse
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

#: The componentize-py release this SDK is built and tested with.
TOOLCHAIN = "0.25.1"

SDK_DIR = os.path.dirname(os.path.abspath(__file__))
WIT_FILE = os.path.join(SDK_DIR, "wit", "plugin.wit")


def worlds(wit_text):
    """{world: set of imported interfaces} of `plugin.wit`, `include`s resolved."""
    found = {}
    for match in re.finditer(r"^world\s+([\w-]+)\s*\{(.*?)^\}", wit_text, re.S | re.M):
        found[match.group(1)] = match.group(2)

    def imports(name, seen=()):
        if name in seen:
            return set()
        body = found[name]
        result = set(re.findall(r"^\s*import\s+([\w-]+)\s*;", body, re.M))
        for included in re.findall(r"^\s*include\s+([\w-]+)\s*;", body, re.M):
            result |= imports(included, seen + (name,))
        return result

    return {name: imports(name) for name in found}


def narrowest_world(needed, wit_text):
    """The world that imports every interface in `needed` and the fewest
    others (ties: the shorter name)."""
    needed = set(needed)
    candidates = [
        (len(imported), len(name), name)
        for name, imported in worlds(wit_text).items()
        if needed <= imported
    ]
    if not candidates:
        raise SystemExit(f"no world of {WIT_FILE} imports all of {', '.join(sorted(needed))}")
    return min(candidates)[2]


#: Capabilities used through an interface of their own name.
OWN_INTERFACE = ("http", "kube", "aws", "command")


def world_interfaces(step, uses_secret_handles):
    """The capability interfaces a step's component must import.

    `http`, `kube`, `aws` and `command` are used through their interface:
    each one the step declares (needed or optional). `secrets` is usable
    through `http` or `command` (a `${{ secrets.NAME }}` parameter is a
    handle the host unseals there), so its own interface is imported only
    by a plugin that looks handles up by name (`runbook_sdk.secrets`).
    `fs` comes through WASI, which every component imports.
    """
    declared = set(step.capabilities) | set(step.optional_capabilities)
    needed = declared & set(OWN_INTERFACE)
    if uses_secret_handles:
        needed.add("secrets")
    return needed


def load_step(source):
    """(module name, folder, Step subclass) of a plugin source file."""
    sys.path.insert(0, os.path.dirname(SDK_DIR))
    import runbook_sdk

    path = os.path.abspath(source)
    folder = os.path.dirname(path)
    module_name = os.path.splitext(os.path.basename(path))[0]
    sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    step = getattr(module, "STEP", None)
    if step is None:
        steps = [
            value
            for value in vars(module).values()
            if inspect.isclass(value)
            and issubclass(value, runbook_sdk.Step)
            and value is not runbook_sdk.Step
            and value.__module__ == module_name
        ]
        if len(steps) != 1:
            names = ", ".join(step.__name__ for step in steps) or "none"
            raise SystemExit(
                f"{source}: expected one subclass of runbook_sdk.Step (found {names}); "
                "name the one to export with `STEP = MyStep`"
            )
        step = steps[0]
    for name in list(step.capabilities) + list(step.optional_capabilities):
        if name not in runbook_sdk.CAPABILITIES:
            raise SystemExit(
                f"{source}: {step.__name__} declares capability {name!r}; "
                f"expected one of {', '.join(runbook_sdk.CAPABILITIES)}"
            )
    uses_secret_handles = "runbook_sdk.secrets" in sys.modules
    return module_name, folder, step, world_interfaces(step, uses_secret_handles)


def componentize_py():
    """The componentize-py command of this Python, checked against TOOLCHAIN."""
    command = shutil.which("componentize-py", path=os.path.dirname(sys.executable)) or shutil.which(
        "componentize-py"
    )
    if command is None:
        raise SystemExit(
            f"componentize-py is not installed: pip install componentize-py=={TOOLCHAIN}"
        )
    version = subprocess.run([command, "--version"], capture_output=True, text=True).stdout.split()
    if version[-1:] != [TOOLCHAIN]:
        raise SystemExit(
            f"{command} is {' '.join(version) or 'unknown'}, this SDK is pinned to "
            f"componentize-py {TOOLCHAIN}: pip install componentize-py=={TOOLCHAIN}"
        )
    return command


def runbook_binary():
    """The host binary that seals: $RUNBOOK, `runbook` on PATH, or this
    checkout's build."""
    if os.environ.get("RUNBOOK"):
        return os.environ["RUNBOOK"]
    found = shutil.which("runbook")
    if found:
        return found
    root = os.path.abspath(os.path.join(SDK_DIR, "..", "..", ".."))
    for profile in ("release", "debug"):
        candidate = os.path.join(root, "target", profile, "runbook")
        if os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit(
        "no `runbook` binary to seal with: set $RUNBOOK or put `runbook` on PATH "
        "(or pass --seal=section)"
    )


def capabilities_section(step):
    """The `runbook:capabilities` bytes: required names, then optional
    ones ending in `?`, comma-separated (docs/plugin-authors.md)."""
    names = list(step.capabilities) + [f"{name}?" for name in step.optional_capabilities]
    return ",".join(names).encode("utf-8")


def _leb128(number):
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def write_section(component, output, payload, name="runbook:capabilities"):
    """Appends a top-level custom section to a component binary. The host
    reads the top-level section first, so one that componentize-py might
    carry deeper (it writes none) would not count."""
    with open(component, "rb") as file:
        data = file.read()
    encoded_name = name.encode("utf-8")
    body = _leb128(len(encoded_name)) + encoded_name + payload
    with open(output, "wb") as file:
        file.write(data + b"\x00" + _leb128(len(body)) + body)


def find_runbook_binary():
    try:
        return runbook_binary()
    except SystemExit:
        return None


ENTRY = """\
# Generated by runbook_sdk.build: exports {step} of {module} as the component.
import runbook_sdk
import {module}

WitWorld = runbook_sdk.export({module}.{step})
"""


def build(source, output, world=None, seal="auto", quiet=False):
    """Builds `source` into `output`; `seal` is "runbook" (`runbook plugin
    seal`), "section" (write the section directly), "auto" (the first when
    a `runbook` binary is found) or "none"."""
    started = time.monotonic()
    module_name, folder, step, needed = load_step(source)
    with open(WIT_FILE) as file:
        wit_text = file.read()
    if world is None:
        world = narrowest_world(needed, wit_text)
    elif world not in worlds(wit_text):
        raise SystemExit(f"no world `{world}` in {WIT_FILE}")
    command = componentize_py()
    output = os.path.abspath(output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="runbook-sdk-build-") as scratch:
        entry = "_runbook_entry"
        with open(os.path.join(scratch, entry + ".py"), "w") as file:
            file.write(ENTRY.format(module=module_name, step=step.__name__))
        if seal == "auto":
            seal = "runbook" if find_runbook_binary() else "section"
        unsealed = os.path.join(scratch, "unsealed.wasm") if seal != "none" else output
        arguments = [
            command,
            "-d", WIT_FILE,
            "-w", world,
            "componentize", entry,
            "-p", scratch,
            "-p", folder,
            "-p", os.path.dirname(SDK_DIR),
            "-o", unsealed,
        ]
        if not quiet:
            print(f"building {step.name or step.__name__} ({source}) for world {world}", file=sys.stderr)
        done = subprocess.run(arguments, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stdout + done.stderr)
            raise SystemExit(f"componentize-py failed ({done.returncode})")
        if seal == "section":
            write_section(unsealed, output, capabilities_section(step))
            if not quiet:
                print(
                    f"wrote the runbook:capabilities section ({capabilities_section(step).decode() or 'nothing'}); "
                    "`runbook plugin seal` would also have checked it against describe",
                    file=sys.stderr,
                )
        elif seal == "runbook":
            sealed = subprocess.run(
                [runbook_binary(), "plugin", "seal", unsealed, "-o", output],
                capture_output=True,
                text=True,
            )
            if sealed.returncode != 0:
                sys.stderr.write(sealed.stdout + sealed.stderr)
                raise SystemExit(f"runbook plugin seal failed ({sealed.returncode})")
            if not quiet:
                sys.stderr.write(sealed.stdout)
    if not quiet:
        size = os.path.getsize(output)
        print(
            f"{output}: {size / 1e6:.1f} MB, world {world}, "
            f"{'not sealed' if seal == 'none' else 'sealed (' + seal + ')'}, {time.monotonic() - started:.1f}s",
            file=sys.stderr,
        )
    return world


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m runbook_sdk.build",
        description="Build a Python step plugin into a sealed WebAssembly component.",
    )
    parser.add_argument("source", help="the plugin's Python file (defines a runbook_sdk.Step subclass)")
    parser.add_argument("-o", "--output", required=True, help="the component to write (.wasm)")
    parser.add_argument("--world", help="a world of wit/plugin.wit (default: the narrowest for the step's capabilities)")
    parser.add_argument(
        "--seal",
        choices=["auto", "runbook", "section", "none"],
        default="auto",
        help="runbook: `runbook plugin seal`; section: write the runbook:capabilities section directly; "
        "auto (default): runbook when a `runbook` binary is found, else section; none: leave it unsealed",
    )
    parser.add_argument("--print-world", action="store_true", help="print the world it would build for, and stop")
    arguments = parser.parse_args(argv)
    if arguments.print_world:
        _, _, _, needed = load_step(arguments.source)
        with open(WIT_FILE) as file:
            print(narrowest_world(needed, file.read()))
        return
    build(arguments.source, arguments.output, arguments.world, seal=arguments.seal)


if __name__ == "__main__":
    main()
