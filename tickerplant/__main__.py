"""python -m tickerplant [--config FILE] [--home DIR]"""
from ops.process import boot, on_term
from tickerplant.tp import Tickerplant


def main(argv=None) -> None:
    cfg, _ = boot("tickerplant", argv)
    tp = Tickerplant(cfg)
    on_term(lambda: setattr(tp, "stopping", True))
    tp.run()


if __name__ == "__main__":
    main()
