"""The plant's network: a TCP relay that makes every request wait, as a plant system behind a
WAN link or a busy application server answers (`python -m plant_sim.latency`).

Each chunk a client sends (an HTTP request to the MES or QMS API; a query, a FETCH of a cursor
page, a COPY chunk to the ERP's or EAM's PostgreSQL) reaches the system `--delay-ms` later, in
order; answers come back at once. Put one in front of each served port and point the platform's
connections at it. The relay knows nothing of the protocols and nothing of the platform.

    python -m plant_sim.latency --delay-ms 50 --route 127.0.0.1:28081=127.0.0.1:18081 \
        --route 127.0.0.1:25432=127.0.0.1:55432
"""

from __future__ import annotations

import argparse
import asyncio
import signal


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                delay_s: float) -> None:
    try:
        while chunk := await reader.read(65536):
            if delay_s:
                await asyncio.sleep(delay_s)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


def _handler(target: tuple[str, int], delay_s: float):
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pump(client_r, upstream_w, delay_s),
                             _pump(upstream_r, client_w, 0.0))

    return handle


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(routes: list[tuple[tuple[str, int], tuple[str, int]]], delay_s: float) -> None:
    servers = [await asyncio.start_server(_handler(target, delay_s), *listen)
               for listen, target in routes]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"latency relay: {delay_s * 1000:.0f} ms per request on "
          f"{', '.join(f'{a[0]}:{a[1]}->{b[0]}:{b[1]}' for a, b in routes)}", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plant_sim.latency",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--route", action="append", required=True,
                        metavar="LISTEN=TARGET", help="host:port=host:port (repeatable)")
    args = parser.parse_args(argv)
    routes = [(_address(a), _address(b)) for a, b in (r.split("=", 1) for r in args.route)]
    asyncio.run(serve(routes, args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
