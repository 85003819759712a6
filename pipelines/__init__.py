"""Apache Beam pipelines that build tuple shards (the package negminer.pipelines)."""

import logging


def _import_beam_quietly() -> None:
    """Import Apache Beam without printing its `apitools not found` warning (logged on import when the `gcp` extra
    is not installed: harmless for local runs).

    In a program that has not set up logging, that warning would print and also set up the root logger (a bare
    logging.warning does). A program that has set up logging keeps receiving it (`negminer -v` shows it).
    """
    root = logging.getLogger()
    if root.handlers:
        import apache_beam  # noqa: F401
        import apache_beam.io.filesystems  # noqa: F401  (registers the GCS file system: the warning's other source)

        return
    guard = logging.NullHandler()
    root.addHandler(guard)
    try:
        import apache_beam  # noqa: F401
        import apache_beam.io.filesystems  # noqa: F401
    finally:
        root.removeHandler(guard)


_import_beam_quietly()
