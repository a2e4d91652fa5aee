"""`codeio-jax rl`: GRPO with execution-verified rewards (gin: gin/rl/*.gin)."""

from __future__ import annotations

from codeio_jax.commands.common import CommandError, gin_flags, parse_gin_flags


def add_commands(sub) -> None:
    rl = sub.add_parser(
        "rl", help="reinforcement learning with rewards verified by execution: GRPO (gin: gin/rl/*.gin)",
        description="T5X-style: --gin_file (repeatable), --gin_search_paths, --gin.NAME=VALUE, e.g. "
                    "--gin_file rl/toy_cpu.gin --gin.MODEL_DIR=\"'runs/rl'\" --gin.rl.steps=20.")
    gin_flags(rl, "gin/rl/*.gin")
    rl.set_defaults(handler=_rl)


def _rl(args) -> int:
    from codeio_jax.rl import benchmark_prompts, prompts, rewards, toy  # noqa: F401 (what the recipes name)
    from codeio_jax.rl.trainer import RLError, rl

    parse_gin_flags(args, register_training=True)

    def progress(row):
        parts = [f"step {row['step']}", f"reward {row['reward_mean']:.3f}", f"pass {row['pass_rate']:.3f}",
                 f"kl {row['kl']:.4f}", f"clip {row['clip_fraction']:.3f}", f"len {row['response_length']:.0f}",
                 f"rollout {row['rollout_s']:.1f}s", f"reward {row['reward_s']:.1f}s", f"update {row['update_s']:.1f}s"]
        parts += [f"{key} {row[key]:.3f}" for key in row if key.startswith("heldout_")]
        print("  ".join(parts), flush=True)

    try:
        report = rl(on_log=progress)
    except (RLError, prompts.PromptError, ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    resumed = f" (resumed at step {report.start_step})" if report.start_step else ""
    held = ", ".join(f"step {step}: {value:.3f}" for step, value in report.heldout)
    print(f"rl: steps {report.start_step}..{report.end_step}{resumed} in {report.last_metrics['seconds']:.0f} s; "
          f"model_dir {report.model_dir}" + (f"; held-out reward {held}" if held else ""))
    return 0
