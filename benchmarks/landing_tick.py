"""landing_sensor tick cost on a history import: 183 Handbook-layout CSV days at the simulator's
size (about 10,000 rows each), read, hashed and judged in one evaluation.

    python3 -m uv run --locked python benchmarks/landing_tick.py
"""
import datetime as dt, tempfile, time
from pathlib import Path
import dagster as dg
from fraud_dagster.resources import LandingSource
from fraud_dagster.sensors import landing_sensor
from fraud_dagster_tests.landing_files import handbook_frame, settle
root = Path(tempfile.mkdtemp())
first = dt.date(2025, 1, 1)
for i in range(183):
    day = first + dt.timedelta(days=i)
    handbook_frame(day, 20_000).write_csv(root / f"{day}.csv")
settle(*root.iterdir())
mb = sum(p.stat().st_size for p in root.iterdir()) / 1e6
with dg.instance_for_test() as instance:
    context = dg.build_sensor_context(instance=instance, resources={"transaction_source": LandingSource(landing_dir=str(root))})
    t = time.perf_counter(); result = landing_sensor(context); wall = time.perf_counter() - t
print(f"183 files, {mb:.0f} MB: one tick {wall:.1f} s, {len(result.run_requests)} run request(s)")
