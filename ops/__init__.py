"""Operations: the CLI, config, process start/stop/status, scheduler, benchmarks."""
