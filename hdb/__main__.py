"""python -m hdb [--config FILE] [--home DIR]: the HDB query process."""
from hdb.hdb import Hdb
from ops.process import boot, on_term


def main(argv=None) -> None:
    cfg, _ = boot("hdb", argv)
    h = Hdb(cfg)
    on_term(h.stop)
    h.run()


if __name__ == "__main__":
    main()
