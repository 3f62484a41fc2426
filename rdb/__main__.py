"""python -m rdb [--config FILE] [--home DIR]"""
from ops.process import boot, on_term
from rdb.rdb import Rdb


def main(argv=None) -> None:
    cfg, _ = boot("rdb", argv)
    r = Rdb(cfg)
    on_term(r.stop)
    r.run()


if __name__ == "__main__":
    main()
