"""``python train.py experiment=setup1_crlsm``: a shim over :func:`calcium_gnn.train.main`."""

from calcium_gnn.train import main

if __name__ == "__main__":
    main()
