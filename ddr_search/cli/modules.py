"""`ddr-search modules list|calibrate`: what a module store holds; move one module's routing threshold."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def modules() -> None:
    """Inspect the module store (the configured one, else the modules shipped with the package)."""


@modules.command("list")
@click.option("--store", type=click.Path(path_type=Path), help="Module store folder (default: configured/packaged).")
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")
def list_modules(store: Path | None, as_json: bool) -> None:
    """List modules: name, kind, version, trainable parameters (and % of the backbone), domains."""
    from ddr_search.factory import default_module_store
    from ddr_search.manifest import read_manifest
    from ddr_search.settings import Settings

    store = store if store is not None else default_module_store(Settings())
    if store is None:
        click.echo("no module store: queries and passages use the frozen backbone alone")
        return
    manifest = read_manifest(store)
    served: dict[str, list[str]] = {}
    for domain, names in manifest.domains.items():
        for name in names:
            served.setdefault(name, []).append(domain)
    recorded = manifest.backbone.get("parameters")  # written by save_store; older stores lack it
    backbone_params = int(recorded) if recorded else None
    rows = []
    for name, record in manifest.modules.items():
        share = 100.0 * record.parameters / backbone_params if backbone_params else None
        rows.append(
            {
                "name": name,
                "kind": record.kind,
                "version": record.version,
                "parameters": record.parameters,
                "percent_of_backbone": round(share, 2) if share is not None else None,
                "domains": sorted(served.get(name, [])) if record.kind == "domain" else ["*"],
                "created": record.created,
                "routing": record.routing,
                "fusion": record.fusion,
                "notes": record.notes,
            }
        )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "store": str(store),
                    "prefix_length": manifest.prefix_length,
                    "adapter_rank": manifest.adapter_rank,
                    "backbone": manifest.backbone,
                    "modules": rows,
                },
                indent=2,
            )
        )
        return
    click.echo(
        f"store {store}  (backbone {manifest.backbone.get('name')}, prefix length {manifest.prefix_length}, "
        f"query adapter rank {manifest.adapter_rank})"
    )
    click.echo(
        f"{'NAME':<16} {'KIND':<8} {'VER':>3} {'PARAMS':>9} {'%BB':>6}  {'AUTO ROUTING':<36} {'FUSION':<16} DOMAINS"
    )
    for row in rows:
        pct = f"{row['percent_of_backbone']:.2f}" if row["percent_of_backbone"] is not None else "-"
        click.echo(
            f"{row['name']:<16} {row['kind']:<8} {row['version']:>3} {row['parameters']:>9,} {pct:>6}  "
            f"{_routing(row['routing'], row['kind']):<36} {_fusion(row['fusion']):<16} {','.join(row['domains'])}"
        )


@modules.command("calibrate")
@click.argument("name")
@click.option(
    "--quantile",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    required=True,
    help="Share of the module's own training queries the threshold lets fall below (trained with 0.05 unless set).",
)
@click.option("--store", type=click.Path(path_type=Path), help="Module store (default: configured/packaged).")
@click.option("--out", type=click.Path(path_type=Path), help="Store to write (default: --store, never the packaged).")
def calibrate_module(name: str, quantile: float, store: Path | None, out: Path | None) -> None:
    """Move NAME's auto-routing threshold (higher quantile: fewer foreign queries reach it). No retraining;
    other modules, their routing and every passage vector stay as they are."""
    from ddr_search.cli.train import store_paths
    from ddr_search.model.store import recalibrate_routing
    from ddr_search.settings import Settings

    source, out = store_paths(store, out, None)
    if source is None:
        raise click.ClickException("no module store: nothing to calibrate")
    before, after = recalibrate_routing(source, out, name, quantile, Settings().backbone)
    click.echo(f"{name}: routing threshold {before:.4f} -> {after:.4f} (quantile {quantile}). Saved to {out}")


def _routing(record: dict[str, str | int | float] | None, kind: str) -> str:
    """How auto routing reaches a module: its profile size and threshold, or why it never does."""
    if kind == "general":
        return f"no domain accepts ({record['queries']} bg)" if record else "when no domain accepts"
    if record is None:
        return "prior only (no profile)"
    quantile = f" (q {float(record['quantile']):g})" if record.get("quantile") is not None else ""
    relative = " vs bg" if record.get("relative_to") else ""
    return f"{record['queries']} queries{relative} >= {float(record['threshold']):.3f}{quantile}"


def _fusion(record: dict[str, str | int | float] | None) -> str:
    """BM25/dense weights tuned for the module, or the settings' when none were."""
    return f"{record['technique']} {record['weights']}" if record else "settings"
