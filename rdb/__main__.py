"""python -m rdb [--config FILE] [--home DIR]: the real-time database process."""
from ops.process import serve
from rdb.rdb import Rdb

if __name__ == "__main__":
    serve("rdb", Rdb)
