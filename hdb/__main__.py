"""python -m hdb [--config FILE] [--home DIR]: the HDB query process."""
from hdb.hdb import Hdb
from ops.process import serve

if __name__ == "__main__":
    serve("hdb", Hdb)
