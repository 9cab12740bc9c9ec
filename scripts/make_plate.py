"""Write a simulated multi-dish experiment: one cell graph per dish and its design table.

    .venv/bin/python scripts/make_plate.py --out plate/ --base border-25 --dishes 4 --effect 0.2 \\
        --noise 0.05 --dish-cv 0.1 [--experiment 0] [--plates 2]

The dishes are those of experiment ``--experiment`` of ``scripts/power.py`` with the same design
(:func:`calcium_gnn.evaluation.plate_power.plate_members`): ``--dishes`` ``control`` dishes with the
base member's ``k`` and ``--dishes`` ``treated`` dishes with ``k (1 - effect)``, each its own culture and
its own between-dish draw of ``k``. Writes ``plate/dishes/<condition>-<i>.pt`` (ground truth included:
``truth_k``), ``plate/design.csv`` (path, condition, plate; the dishes dealt round-robin over ``--plates``
plates) and ``plate/truth.csv`` (each dish's true ``k``). Then::

    .venv/bin/python train.py experiment=setup1_neural_ode data=culture_folder data.table=plate/design.csv

The folder ``--out`` must not exist yet (nothing is overwritten).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calcium_gnn.data import zoo  # noqa: E402
from calcium_gnn.errors import CalciumGNNError, OutputError  # noqa: E402
from calcium_gnn.evaluation.plate_power import PlateDesign, plate_members  # noqa: E402
from calcium_gnn.io.atomic import atomic_write_text  # noqa: E402
from calcium_gnn.io.conditions_table import Dish, write_conditions_table  # noqa: E402
from calcium_gnn.io.graph_files import save_graph  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="a new folder for the plate")
    parser.add_argument("--base", default="border-25", help="zoo design of every dish (a border member)")
    parser.add_argument("--dishes", type=int, default=4, help="dishes per condition")
    parser.add_argument("--effect", type=float, default=0.2, help="relative drop of k in the treated dishes")
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--dish-cv", type=float, default=0.1,
                        help="between-dish coefficient of variation of k")
    parser.add_argument("--experiment", type=int, default=0, help="which simulated experiment")
    parser.add_argument("--plates", type=int, default=1, help="plates the dishes are dealt over")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        if out.exists():
            raise OutputError(out, "exists: give a new folder (nothing is overwritten)")
        if args.plates < 1:
            raise OutputError("--plates", f"must be >= 1, got {args.plates}")
        design = PlateDesign(args.base, args.dishes, args.effect, args.noise, args.dish_cv)
        members = plate_members(design, args.experiment)
        (out / "dishes").mkdir(parents=True)
        dishes: list[Dish] = []
        truth = ["path,condition,k_true"]
        for condition in ("control", "treated"):
            for i, member in enumerate(members[condition]):
                path = out / "dishes" / f"{condition}-{i}.pt"
                save_graph(zoo.member_graph(member), path)
                plate = f"plate{len(dishes) % args.plates + 1}" if args.plates > 1 else None
                dishes.append(Dish(path, condition, plate))
                truth.append(f"dishes/{path.name},{condition},{member.k!r}")
        table = write_conditions_table(dishes, out / "design.csv")
        atomic_write_text(out / "truth.csv", "\n".join(truth) + "\n")
    except CalciumGNNError as err:
        parser.exit(2, f"make_plate.py: {err}\n")
    print(f"{len(dishes)} dishes of {args.base} ({members['control'][0].n_cells} cells, "
          f"{members['control'][0].n_frames} frames) in {out / 'dishes'}; design table {table}")


if __name__ == "__main__":
    main()
