"""A real SMTP server for the worker's integration tests (aiosmtpd).

Usage: python3 smtp_sink.py PORT MAILDIR [RCPT_DELAY_SECONDS]

Every accepted message is written atomically as MAILDIR/<ns>.eml. Every RCPT TO is recorded as
MAILDIR/<ns>.rcpt (the address) the moment it arrives, before any delay: a test sees that a send
has begun. RCPT_DELAY_SECONDS makes the server pause before answering RCPT TO, so a test can kill a
worker in the middle of a send (before any message exists) or stop it gracefully while a send is
in flight.
"""

import asyncio
import os
import signal
import sys
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, maildir: str, delay: float):
        self.maildir = maildir
        self.delay = delay

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        name = f"{time.time_ns()}.rcpt"
        tmp = os.path.join(self.maildir, "." + name)
        with open(tmp, "w") as f:
            f.write(address)
        os.replace(tmp, os.path.join(self.maildir, name))
        if self.delay:
            await asyncio.sleep(self.delay)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        name = f"{time.time_ns()}.eml"
        tmp = os.path.join(self.maildir, "." + name)
        with open(tmp, "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.replace(tmp, os.path.join(self.maildir, name))
        return "250 Message accepted for delivery"


def main() -> None:
    port = int(sys.argv[1])
    maildir = sys.argv[2]
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    os.makedirs(maildir, exist_ok=True)
    controller = Controller(Sink(maildir, delay), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


if __name__ == "__main__":
    main()
