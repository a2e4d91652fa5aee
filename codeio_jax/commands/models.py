"""Commands for models: train and evaluate (gin), convert checkpoints, serve a model.

Each handler imports what it needs when it runs.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from pathlib import Path

from codeio_jax.commands.common import CommandError, gin_flags, parse_gin_flags


def add_commands(sub) -> None:
    train = sub.add_parser(
        "train", help="train a model (gin-configured: gin/train/*.gin)",
        description="T5X-style: --gin_file (repeatable), --gin_search_paths, --gin.NAME=VALUE, e.g. "
                    "--gin.MODEL_DIR=\"'runs/x'\" --gin.train.steps=100.")
    gin_flags(train, "gin/train/*.gin, gin/models/*.gin")
    train.add_argument("--compile_only", action="store_true",
                       help="compile the configured step for --topology over abstract arrays and report its "
                            "per-chip memory and XLA's cost estimate; trains nothing (exit 3: it does not fit)")
    train.add_argument("--topology", default=None,
                       help="with --compile_only: a Cloud TPU slice (v5p-64, v6e-256, v5e-16, v4-32, ...) or "
                            "cpu:N for N fake CPU devices")
    train.add_argument("--json", type=Path, default=None, help="with --compile_only: also write the report here")
    train.add_argument("--coordinator_address", default=None,
                       help="multi-process job: process 0's host:port (default: $JAX_COORDINATOR_ADDRESS; on a "
                            "Cloud TPU slice, under SLURM or Open MPI jax finds it)")
    train.add_argument("--num_processes", type=int, default=None,
                       help="multi-process job: how many processes (default: $JAX_NUM_PROCESSES)")
    train.add_argument("--process_id", type=int, default=None,
                       help="multi-process job: this process's id, 0 to num_processes-1 (default: $JAX_PROCESS_ID)")
    train.set_defaults(handler=_train)

    evaluate = sub.add_parser(
        "eval", help="evaluate a model on SeqIO eval tasks by generation (gin: gin/eval/*.gin)",
        description="T5X-style gin flags, e.g. --gin_file eval/cruxeval.gin --gin.CHECKPOINT=\"'runs/x'\"")
    gin_flags(evaluate, "gin/eval/*.gin")
    evaluate.set_defaults(handler=_eval)

    convert = sub.add_parser("convert", help="models between Hugging Face folders, codeio-jax checkpoints and "
                                             "GGUF files (llama.cpp's; gguf-to-hf only); LoRA adapters to PEFT",
                             description="jax-to-hf of a run that trained LoRA adapters writes the base with the "
                                         "adapters merged in; jax-to-peft writes the adapters alone, as peft's "
                                         "adapter_config.json and adapter_model.safetensors.")
    convert.add_argument("direction", choices=["hf-to-jax", "jax-to-hf", "gguf-to-hf", "jax-to-peft"])
    convert.add_argument("--in", dest="inp", required=True, type=Path,
                         help="a Hugging Face folder (config.json + safetensors), a codeio-jax checkpoint or "
                              "training run, or a .gguf file (llama or qwen2 architecture)")
    convert.add_argument("--out", required=True, type=Path, help="the folder to write (must not hold a model)")
    convert.add_argument("--dtype", default=None,
                         help="parameter dtype, e.g. bfloat16 (default: as stored; gguf-to-hf: float32, the "
                              "quantised weights dequantised)")
    convert.add_argument("--max-shard-gb", type=float, default=5.0,
                         help="jax-to-hf and gguf-to-hf: safetensors shard size")
    convert.set_defaults(handler=_convert)

    experiment = sub.add_parser(
        "experiment", help="the paper's comparison in miniature: base, +CodeI/O, +CodeI/O++ and the no-chain-of-"
                           "thought ablation, one table (gin: gin/experiments/*.gin)",
        description="e.g. --gin_file experiments/miniature_cpu.gin --gin.BASE_MODEL=\"'runs/smollm2'\" "
                    "--gin.WORK_DIR=\"'runs/miniature'\"; writes table.md and results.json in WORK_DIR")
    gin_flags(experiment, "gin/experiments/*.gin")
    experiment.set_defaults(handler=_experiment)

    serve = sub.add_parser("serve", help="an OpenAI-compatible chat server for a Hugging Face model folder")
    serve.add_argument("--model", required=True, type=Path, help="config.json, safetensors and tokenizer.json")
    serve.add_argument("--family", default=None, choices=["qwen2", "llama3", "gemma2", "deepseek_v2"],
                       help="force one of our chat templates (default: the folder's own, else the model's family's)")
    serve.add_argument("--name", default=None, help="the model name clients send (default: the folder's name)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-batch", type=int, default=8, help="requests generated together at most")
    serve.add_argument("--max-length", type=int, default=None,
                       help="prompt + reply tokens at most (default: the model's max_position_embeddings)")
    serve.set_defaults(handler=_serve)


def _train(args) -> int:
    if args.compile_only:
        from codeio_jax.commands.compile_only import compile_only

        return compile_only(args)
    if args.topology or args.json:
        raise CommandError("--topology and --json go with --compile_only")
    from codeio_jax.training import hardware, partitioning

    hardware.prefer_memory_scheduler_on_cpu()  # before jax starts: remat then saves memory on a CPU host
    try:
        partitioning.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    except partitioning.DistributedError as exc:
        raise CommandError(str(exc)) from None
    import jax

    _parse_gin_alike_on_every_process(args)
    from codeio_jax.training.trainer import train

    # Every process logs the same replicated numbers; one copy is enough.
    primary = jax.process_index() == 0

    def progress(row):
        if not primary:
            return
        parts = [f"step {row['step']}", f"loss {row['loss']:.4f}", f"lr {row['learning_rate']:.2e}",
                 f"grad_norm {row['grad_norm']:.3f}", f"{row['tokens_per_s']:,.0f} tokens/s"]
        if "mfu" in row:
            parts.append(f"MFU {100 * row['mfu']:.1f}%")
        parts += [f"{k} {v:.2f}" for k, v in row.items() if k.startswith("eval/")]
        print("  ".join(parts), flush=True)

    try:
        report = train(on_log=progress)
    except (ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    if primary:
        resumed = f" (resumed at step {report.start_step})" if report.start_step else ""
        print(f"train: steps {report.start_step}..{report.end_step}{resumed}; model_dir {report.model_dir}")
    return 0


def _parse_gin_alike_on_every_process(args) -> None:
    """Parse the gin flags and make sure every process of the job parsed the same
    config: processes that train different configs in one job would hang in their
    first collective or train garbage. Every process fails with the same message."""
    import hashlib

    import gin
    import jax

    # One process alone does not start the backend here: that waits for the trainer.
    if not jax.distributed.is_initialized() or jax.process_count() == 1:
        parse_gin_flags(args, register_training=True)
        return
    import numpy as np
    from jax.experimental import multihost_utils

    try:
        parse_gin_flags(args, register_training=True)
        failure, digest = None, hashlib.sha256(gin.config_str().encode()).digest()
    except CommandError as exc:
        failure, digest = exc, bytes(32)
    local = np.frombuffer(bytes([failure is not None]) + digest, np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(local))
    if failure is not None:
        raise failure
    failed = [process for process, row in enumerate(gathered) if row[0]]
    if failed:
        raise CommandError(f"{_processes(failed)} could not parse the gin config (its own error says why)")
    groups: dict[bytes, list[int]] = {}
    for process, row in enumerate(gathered):
        groups.setdefault(row[1:].tobytes(), []).append(process)
    if len(groups) > 1:
        described = "; ".join(f"{_processes(members)}: config {config_digest.hex()[:12]}"
                              for config_digest, members in groups.items())
        raise CommandError(f"the processes of this job parsed different gin configs ({described}); start every "
                           f"process with the same --gin_file and --gin flags and the same gin files")


def _processes(ids: list[int]) -> str:
    return f"process {ids[0]}" if len(ids) == 1 else f"processes {', '.join(map(str, ids))}"


def _eval(args) -> int:
    parse_gin_flags(args, register_training=True)
    from codeio_jax.training.evaluation import evaluate

    try:
        scores = evaluate()
    except (ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    for name, value in scores.items():
        print(f"{name}: {value:.2f}")
    return 0


def _experiment(args) -> int:
    from codeio_jax.training.hardware import skip_tpu_probe_without_a_tpu

    skip_tpu_probe_without_a_tpu()
    from codeio_jax.experiments.miniature import run_miniature  # registers it with gin before parsing

    parse_gin_flags(args, register_training=True)

    try:
        run_miniature(on_line=lambda line: print(line, flush=True))  # the table is its last line
    except (ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    return 0


def _convert(args) -> int:
    if not args.inp.exists():
        raise CommandError(f"{args.inp} does not exist")
    if args.direction == "gguf-to-hf":
        return _gguf_to_hf(args)
    if args.direction == "jax-to-peft":
        return _jax_to_peft(args)
    from codeio_jax.models import checkpoint, convert

    try:
        if args.direction == "hf-to-jax":
            config, params = convert.load_hf(args.inp, dtype=args.dtype)
            checkpoint.save(args.out, config, params)
        else:
            config, params = checkpoint.load(args.inp)
            convert.save_hf(args.out, config, params, dtype=args.dtype,
                            max_shard_bytes=int(args.max_shard_gb * (1 << 30)))
    except (convert.CheckpointError, FileNotFoundError, FileExistsError, TypeError) as exc:
        raise CommandError(str(exc)) from None
    count = sum(x.size for x in __import__("jax").tree_util.tree_leaves(params))
    print(f"convert {args.direction}: {config.family}, {config.num_layers} layers, {count:,} parameters -> {args.out}")
    return 0


def _jax_to_peft(args) -> int:
    from codeio_jax.models import checkpoint, lora

    if (args.out / lora.ADAPTER_CONFIG).exists():
        raise CommandError(f"{args.out} already holds an adapter; choose another folder")
    try:
        config, adapters, base = checkpoint.load_adapters(args.inp)
        lora.save_peft(args.out, config, adapters, base_model=str(base))
    except (ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    count = sum(x.size for x in __import__("jax").tree_util.tree_leaves(adapters))
    settings = config.lora
    print(f"convert jax-to-peft: rank {settings.rank}, alpha {settings.alpha:g} on "
          f"{', '.join(settings.targets)}, {count:,} adapter parameters (base {base}) -> {args.out}")
    return 0


def _gguf_to_hf(args) -> int:
    # No jax here: a GGUF becomes an HF folder with numpy, gguf and safetensors alone.
    from codeio_jax.commands.common import Progress
    from codeio_jax.models import gguf

    try:
        model = gguf.open_gguf(args.inp, dtype=args.dtype or "float32")
        with Progress(total=len(model.hf_names), unit="tensors", desc="gguf-to-hf") as progress:
            gguf.write_hf(model, args.out, max_shard_bytes=int(args.max_shard_gb * (1 << 30)),
                          on_tensor=lambda name, kind: progress.count(kind, 1))
    except (gguf.GGUFError, FileExistsError) as exc:
        raise CommandError(str(exc)) from None
    config = model.config
    kinds = ", ".join(f"{count} {kind}" for kind, count in model.tensor_types.most_common())
    print(f"convert gguf-to-hf: {config.family}, {config.num_layers} layers, {model.parameter_count:,} parameters "
          f"({kinds} tensors) as {config.param_dtype} -> {args.out}")
    return 0


def _serve(args) -> int:
    from codeio_jax.models.chat_template import ChatTemplateError
    from codeio_jax.models.convert import CheckpointError
    from codeio_jax.sampling.chat import ChatModel
    from codeio_jax.sampling.server import make_server

    if args.max_batch < 1:
        raise CommandError(f"--max-batch must be at least 1, got {args.max_batch}")
    try:
        chat = ChatModel.from_folder(args.model, args.family, args.max_length)
    except (CheckpointError, ChatTemplateError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    name = args.name or args.model.resolve().name
    server = make_server(chat, args.host, args.port, name, args.max_batch)
    host, port = server.server_address[:2]
    print(f"serving {name} ({chat.template_name}, batches of up to {args.max_batch}) on http://{host}:{port}/v1",
          flush=True)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a server that will not stop is waiting on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # A process started in the background by a shell without job control (`cmd &`
    # in a script, a CI runner) inherits SIGINT ignored, and Python then leaves it
    # ignored: Ctrl-C and `kill -INT` would do nothing. Stopping is what they ask,
    # as is SIGTERM (a supervisor's stop).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()
        print("interrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Every request is answered and the batcher joined; skip the interpreter's
        # teardown, in which native threads (XLA, tokenizers) have aborted the process.
        os._exit(130)
    server.server_close()
    return 0
