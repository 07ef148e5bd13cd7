"""Write the C project of a training graph: sources from templates, kernels and runtime copied beside.

The directory is complete on its own (`make`, `make run`); output is deterministic, and output.py writes it
without a half-written file and without touching a file tinyodl did not write.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np

from tinyodl.backend_c.dataset import TrainingData, dataset_context
from tinyodl.backend_c.emitters import EMITTERS, BackendError, EmitContext
from tinyodl.backend_c.names import SymbolTable, c_float_exact, c_string, comment_text, identifier
from tinyodl.backend_c.output import write_tree
from tinyodl.backend_c.program import Buffer, KernelCall, Program, Region
from tinyodl.backend_c.tiled import emit_tile_loop
from tinyodl.ir.graph import Graph, Value
from tinyodl.ir.registry import kernel_of, op_macs
from tinyodl.ir.target import Target
from tinyodl.ir.types import Phase, Role
from tinyodl.passes.memory import plan_memory
from tinyodl.runtime.host import render_linker_script

_KIND = {Role.INPUT: "in", Role.PARAM: "p", Role.CONST: "c", Role.STATE: "s", Role.ACT: "act", Role.GRAD: "g",
         Role.LOSS: "act"}
STACK_BYTES = 16 * 1024


def lower_to_program(graph: Graph, steps: int, cores: int) -> Program:
    symbols = SymbolTable()
    buffers: dict[Value, Buffer] = {}
    if graph.memory_plan is None:  # a pipeline without the memory pass: place the ops' order as it is
        plan_memory(graph)

    def add(value: Value, kind: str, init: str = "") -> Buffer:
        ctype = "float" if value.dtype.is_float else "int"
        stem = symbols.stem(value.name)
        assert value.l2_offset is not None, f"%{value.name} has no place in the L2 plan"
        buffer = Buffer(identifier(_KIND[value.role], stem), stem, ctype, value.type.numel, kind, value.name,
                        init=init, offset=value.l2_offset)
        if buffer.nbytes > value.type.nbytes:
            raise BackendError(f"%{value.name}: its C buffer ({buffer.nbytes} B of {ctype}) is larger than the "
                               f"{value.type.nbytes} B the L2 plan reserved for {value.type}")
        buffers[value] = buffer
        return buffer

    for value in graph.inputs:
        add(value, "input")
    for value in graph.params:
        add(value, "param" if value.role is Role.PARAM else "const", _initializer(graph.initial[value.name]))
    for value in graph.state:
        data = graph.initial[value.name]
        add(value, "state", _initializer(data) if np.any(data) else "")
    regions: dict[tuple[str, str], Region] = {}
    calls: list[KernelCall] = []
    l1_bytes = 0
    grad_of = {op.inputs[0]: op.inputs[1] for op in graph.ops if op.phase is Phase.UPDATE and len(op.inputs) > 1}
    kept: dict[Value, Buffer] = {}  # trainable parameter -> the off-chip copy of its gradient
    keep_after: list[KernelCall] = []  # the copy follows the update's call, before the next op reuses the storage
    for op in graph.ops:
        calls.extend(keep_after)
        keep_after = []
        if op.phase is Phase.UPDATE and op.inputs and op.inputs[0] in grad_of and op.inputs[0].trainable:
            keep_after = [_keep_gradient(op.inputs[0], buffers[grad_of[op.inputs[0]]], kept)]
        if op.type == "reshape":
            view, stem = op.outputs[0], symbols.stem(op.outputs[0].name)
            alias = Buffer(identifier(_KIND[view.role], stem), stem, buffers[op.inputs[0]].ctype, view.type.numel,
                           "view", view.name, alias_of=buffers[op.inputs[0]])
            buffers[op.outputs[0]] = alias
            continue
        for value in op.outputs:
            add(value, {Role.GRAD: "gradient", Role.LOSS: "loss"}.get(value.role, "activation"))
        key = (op.node, op.phase.value)
        region = regions.get(key)
        if region is None:
            region = regions[key] = Region(len(regions) + 1, op.node, op.phase.value)
        kernel = kernel_of(op.type, op.attrs)[0]
        region.ops.append(kernel)
        region.macs += op_macs(op)
        ctx = EmitContext(symbols, lambda v: buffers[v].symbol)
        subject = f" {op.inputs[0].origin or op.inputs[0].name}" if op.phase is Phase.UPDATE and op.inputs else ""
        comment = comment_text(f"{op.node} ({op.phase.value}): {kernel}{subject}")
        emitter = EMITTERS.get(kernel)
        if emitter is None:
            raise BackendError(f"node {op.node!r}: op {kernel} has no C kernel yet")
        try:
            if op.type == "tile_loop":
                loop = emit_tile_loop(op, ctx, lambda v: buffers[v].symbol, comment)
                calls.append(KernelCall(loop.call, comment, region.id, ctx.decls, loop.definitions))
                l1_bytes = max(l1_bytes, loop.l1_bytes)
                continue
            code = emitter(op, ctx)
        except BackendError as exc:
            raise BackendError(f"node {op.node!r}: {exc}") from None
        calls.append(KernelCall(code, comment, region.id, ctx.decls))
    calls.extend(keep_after)
    if len(regions) >= 2047:
        raise BackendError(f"the model has {len(regions)} layer x phase regions; at most 2046 are supported")
    inputs = [buffers[v] for v in graph.inputs]
    trainable = [(v.origin or v.name, buffers[v]) for v in graph.trainable_params()]
    grads = [kept.get(v) for v in graph.trainable_params()]
    arena_bytes = max((b.offset + b.nbytes for b in buffers.values() if b.alias_of is None), default=0)
    return Program(graph.name, cores, steps, list(buffers.values()), calls, list(regions.values()),
                   inputs, trainable, buffers[graph.outputs[0]], grads=grads, l1_bytes=l1_bytes,
                   arena_bytes=arena_bytes)


def _keep_gradient(param: Value, grad: Buffer, kept: dict[Value, Buffer]) -> KernelCall:
    """An off-chip copy of a parameter's gradient for the host's check, and the call that fills it. The
    gradient's L2 storage goes to other tensors once the update has read it (the memory plan), so the
    host could not read it after the step. Region 0: the copy is not part of any layer's work."""
    copy = Buffer(identifier("kept", grad.stem), grad.stem, grad.ctype, grad.numel, "kept", grad.value_name)
    kept[param] = copy
    code = (f"{{ int first, end; rt_chunk({copy.numel}, &first, &end); "
            f"for (int i = first; i < end; i++) {copy.symbol}[i] = {grad.symbol}[i]; }}")
    return KernelCall(code, comment_text(f"keep the gradient of {param.origin or param.name} for the host"), 0)


def _initializer(data: np.ndarray) -> str:
    flat = np.asarray(data).reshape(-1)
    if np.issubdtype(flat.dtype, np.integer):
        words = [str(int(v)) for v in flat]
    else:
        words = [c_float_exact(float(v)) for v in flat.astype(np.float32)]
    lines = [", ".join(words[i:i + 8]) for i in range(0, len(words), 8)]
    return ",\n    ".join(lines)


def _environment() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(str(resources.files("tinyodl.backend_c") / "templates"))
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["c_string"] = c_string
    env.filters["comment"] = comment_text
    return env


def render_project(graph: Graph, data: TrainingData, target: Target, *, dma_check: bool = False,
                   outputs: bool = False, platform: str = "qemu") -> tuple[Program, dict[str, str]]:
    """The project's files by relative path. `dma_check` poisons DMA destinations until their wait. With
    `outputs`, the program also prints the model output (the loss's input) of every step, as
    `tinyodl eval --target qemu` reads it. `platform` is the simulator the runtime is built for
    (runtime/c/rt_platform.h): "qemu" or "gvsoc"."""
    program = lower_to_program(graph, data.steps, target.cores)
    env = _environment()
    context = {"program": program, "model": comment_text(graph.name), **dataset_context(data, program.inputs),
               "dma_check": dma_check, "dma_timing": _dma_timing(target),
               "l1_bytes": target.l1_bytes, "l2_bytes": target.l2_bytes, "stack_bytes": STACK_BYTES,
               "num_cores": target.cores, "static_bytes": program.arena_bytes, "print_outputs": outputs,
               "platform": platform}
    if outputs:
        model_output = next(op.inputs[0] for op in graph.ops if op.phase is Phase.LOSS)
        context["output"] = next(b for b in program.buffers if b.value_name == model_output.name)
    files = {
        "src/network.h": env.get_template("network.h.j2").render(context),
        "src/network.c": env.get_template("network.c.j2").render(context),
        "src/params.h": env.get_template("params.h.j2").render(context),
        "src/data.h": env.get_template("data.h.j2").render(context),
        "src/main.c": env.get_template("main.c.j2").render(context),
        "Makefile": env.get_template("Makefile.j2").render(context),
        "README.md": env.get_template("README.md.j2").render(context),
    }
    runtime_dir = resources.files("tinyodl.runtime") / "c"
    try:  # the runtime's renderer checks the budgets against QEMU's memory, so a bad one fails here, not in ld
        files["link.ld"] = render_linker_script(target.l1_bytes, target.l2_bytes, STACK_BYTES, target.cores,
                                                platform)
    except ValueError as exc:
        raise BackendError(f"--l1 {target.l1_bytes} / --l2 {target.l2_bytes}: {exc}") from None
    for entry in sorted(runtime_dir.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".c", ".h", ".S")):
            files[f"runtime/{entry.name}"] = entry.read_text()
    kernel_dir = resources.files("tinyodl.backend_c") / "kernels"
    for entry in sorted(kernel_dir.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".c", ".h")):
            files[f"kernels/{entry.name}"] = entry.read_text()
    files["regions.json"] = json.dumps({"model": graph.name, "cores": target.cores, "steps": data.steps,
                                        "regions": [vars(r) for r in program.regions],
                                        "params": [name for name, _ in program.trainable],
                                        "static_bytes": program.arena_bytes}, indent=1) + "\n"
    return program, files


def _dma_timing(target: Target) -> str:
    return " ".join([f"-DRT_DMA_L2_TO_L1_SETUP_CYCLES={target.dma_in_setup_cycles}u",
                     f"-DRT_DMA_L2_TO_L1_BYTES_PER_100_CYCLES={round(100 * target.dma_in_bytes_per_cycle)}u",
                     f"-DRT_DMA_L1_TO_L2_SETUP_CYCLES={target.dma_out_setup_cycles}u",
                     f"-DRT_DMA_L1_TO_L2_BYTES_PER_100_CYCLES={round(100 * target.dma_out_bytes_per_cycle)}u"])


def write_project(graph: Graph, data: TrainingData, target: Target, out_dir: Path, *, dma_check: bool = False,
                  outputs: bool = False, force: bool = False, platform: str = "qemu") -> Program:
    """Render the project and write it into `out_dir` (see output.py for what `force` allows)."""
    program, files = render_project(graph, data, target, dma_check=dma_check, outputs=outputs, platform=platform)
    write_tree(out_dir, files, force=force)
    return program
