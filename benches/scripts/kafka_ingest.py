"""End-to-end Kafka ingest through a running-from-scratch Eddy server and a local broker.

Writes Nexmark bids (`events.max = N`, as JSON) to a new topic of 4 partitions with a `kafka`
sink, then times bounded `kafka` source reads of that topic through TUMBLE queries, with the
CPU time the server and the broker spent (from /proc). Needs a Kafka-protocol broker on
127.0.0.1 (`EDDY_KAFKA=host:port`, e.g. tansu as `.ci/run` starts it), its process id
(`BROKER_PID`) and a server binary (`EDDY_BIN`, a release build for figures):

    EDDY_BIN=$CARGO_TARGET_DIR/release/eddy EDDY_KAFKA=127.0.0.1:9092 BROKER_PID=... \
      ~/.cache/eddy-venv/bin/python benches/scripts/kafka_ingest.py 1000000 [server args...]

Extra source options can be given as EXTRA=", properties.fetch.wait.max.ms = '5'".
"""

import os
import sys
import time
from pathlib import Path

CLIENTS = Path(__file__).resolve().parents[2] / "sql-tests" / "clients"
sys.path.insert(0, str(CLIENTS))
os.chdir(CLIENTS)

import test_kafka as tk  # noqa: E402
from conftest import EddyServer  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    broker = os.environ["EDDY_KAFKA"]
    broker_pid = int(os.environ["BROKER_PID"])
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    server = EddyServer(Path(os.environ["EDDY_BIN"]), sys.argv[2:])
    server.start()
    try:
        topic = tk.create_topic(broker, 4)
        with tk.connect(server) as conn:
            conn.execute(
                "CREATE SOURCE nx_bid WITH (connector = 'nexmark', nexmark.table = 'bid', "
                f"events.max = '{events}')"
            )
            started = time.monotonic()
            conn.execute(
                "CREATE SINK to_kafka AS SELECT * FROM nx_bid WITH (connector = 'kafka', "
                f"topic = '{topic}', properties.bootstrap.servers = '{broker}', format = 'json')"
            )
            tk.wait_for(
                "the sink to finish",
                lambda: tk.job(conn, "to_kafka")["status"] in ("finished", "failed"),
                timeout=1200,
                server=server,
            )
            job = tk.job(conn, "to_kafka")
            took = time.monotonic() - started
            messages = job["rows_in"]
            print(f"sink: {job['status']}, {messages} messages in {took:.2f} s, "
                  f"{messages / took / 1e6:.3f} M msg/s")
            conn.execute(
                "CREATE SOURCE kb (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, "
                "url VARCHAR, date_time TIMESTAMP(3), extra VARCHAR, "
                "WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) "
                f"WITH (connector = 'kafka', topic = '{topic}', "
                f"properties.bootstrap.servers = '{broker}', format = 'json', "
                f"scan.bounded.mode = 'latest-offset'{os.environ.get('EXTRA', '')})"
            )
            for label, sql in [
                ("count per 10 s window", "SELECT window_start, count(*) FROM TUMBLE(kb, "
                 "date_time, INTERVAL '10' SECOND) GROUP BY window_start, window_end"),
                ("count per 10 s window", "SELECT window_start, count(*) FROM TUMBLE(kb, "
                 "date_time, INTERVAL '10' SECOND) GROUP BY window_start, window_end"),
                ("max price per 10 s window", "SELECT window_start, max(price) FROM TUMBLE(kb, "
                 "date_time, INTERVAL '10' SECOND) GROUP BY window_start, window_end"),
            ]:
                eddy0, broker0 = cpu_seconds(server.proc.pid), cpu_seconds(broker_pid)
                started = time.monotonic()
                rows = conn.execute(sql).fetchall()
                took = time.monotonic() - started
                eddy = cpu_seconds(server.proc.pid) - eddy0
                spent = cpu_seconds(broker_pid) - broker0
                counted = sum(r[1] for r in rows) if label.startswith("count") else "-"
                print(f"{label}: {len(rows)} windows, {counted} rows counted, {took:.2f} s, "
                      f"{messages / took / 1e6:.3f} M msg/s, Eddy CPU {eddy:.2f} s "
                      f"({messages / max(eddy, 1e-9) / 1e6:.2f} M msg/CPU-s), broker CPU {spent:.2f} s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
