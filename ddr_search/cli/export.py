"""`ddr-search export`: a thin layer over onnx_export.export.export_store."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.option("--int8", "int8", is_flag=True, help="Also write int8 encoders (per-channel dynamic quantisation).")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Export folder [DDR_ONNX_DIR, else DDR_HOME/onnx]."
)
@click.option(
    "--modules",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Module store to export [DDR_MODULES, else the packaged store, else the frozen backbone].",
)
@click.option(
    "--backbone", type=click.Path(file_okay=False, exists=True, path_type=Path), help="Local BERT-family folder."
)
def export(int8: bool, out: Path | None, modules: Path | None, backbone: Path | None) -> None:
    """Export the encoders to ONNX: passage, one query encoder per domain module, weighted query, router.

    The query path and the workers use the export automatically while it matches the module store;
    after training a module, export again (a stale export is refused, never silently used).
    """
    from ddr_search.factory import default_module_store, default_onnx_dir
    from ddr_search.settings import Settings
    from onnx_export.export import export_store

    settings = Settings(backbone=backbone) if backbone is not None else Settings()
    store = modules if modules is not None else default_module_store(settings)
    target = out if out is not None else default_onnx_dir(settings)
    manifest = export_store(
        store,
        target,
        backbone=settings.backbone,
        int8=int8,
        progress=lambda message: click.echo(f"{message} ...", err=True),
    )
    for record in manifest.graphs.values():
        click.echo(f"{record.file:32} {record.bytes / 1e6:7.1f} MB  {record.role}  {record.module or ''}".rstrip())
    click.echo(
        f"exported module store {store or '(none: frozen backbone)'} (version {manifest.store_version}, "
        f"encoder {manifest.encoder_version}) to {target}"
    )
