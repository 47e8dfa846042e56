"""Formatting of ``cluster.print_status()`` (dispy's table)."""

from __future__ import annotations

from collections.abc import Iterable

from ..nodes import DispyNode


def human_bytes(n: float) -> str:
    for unit in ('', ' K', ' M', ' G', ' T'):
        if n < 1024 or unit == ' T':
            return f'{n:.0f}{unit}' if unit == '' else f'{n:.1f}{unit}'
        n /= 1024
    return f'{n:.1f}'


def format_status(nodes: Iterable[DispyNode], wall_time: float) -> str:
    lines = [f"{'Node':>30} | {'CPUs':>4} | {'Jobs':>6} | {'Sec/Job':>8} | "
             f"{'Node Time Sec':>13} | {'Sent':>8} | {'Rcvd':>8}",
             '-' * 95]
    total_time = 0.0
    for node in nodes:
        per_job = node.cpu_time / node.jobs_done if node.jobs_done else 0.0
        label = f'{node.ip_addr} ({node.name})' if node.name != node.ip_addr else node.ip_addr
        lines.append(f'{label[:30]:>30} | {node.cpus:>4} | {node.jobs_done:>6} | '
                     f'{per_job:>8.3f} | {node.cpu_time:>13.3f} | {human_bytes(node.tx):>8} | '
                     f'{human_bytes(node.rx):>8}')
        total_time += node.cpu_time
    speedup = total_time / wall_time if wall_time > 0 else 0.0
    lines += ['', f'Total job time: {total_time:.3f} sec, wall time: {wall_time:.3f} sec, '
                  f'speedup: {speedup:.3f}', '']
    return '\n'.join(lines)
