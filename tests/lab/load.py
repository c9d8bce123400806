"""Runs lab-load (load_client.py) inside a machine around a disruption, and reads its result."""

import json
import subprocess

from .log import fail, info


class Load:
    def __init__(self, machine, url, name):
        self.machine = machine
        self.url = url
        self.out = f"/run/lab-load-{name}.json"
        self.stop_file = f"/run/lab-load-{name}.stop"
        self.process = None

    def __enter__(self):
        self.machine.run(["rm", "-f", self.out, self.out + ".started", self.stop_file])
        self.process = self.machine.popen(["/usr/local/bin/lab-load", self.url, self.out, self.stop_file],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.machine.wait_for(f"the first answer to {self.url}",
                              lambda: self.machine.run(["test", "-e", self.out + ".started"],
                                                       check=False).returncode == 0,
                              timeout=30)
        return self

    def __exit__(self, *exc):
        if self.process and self.process.poll() is None:
            self.machine.run(["touch", self.stop_file], check=False)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def finish(self):
        """Stops the load and returns its totals; fails on any failed request."""
        self.machine.run(["touch", self.stop_file])
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            fail(f"lab-load on {self.machine.name} did not stop")
        text = self.machine.run(["cat", self.out], check=False).stdout
        if not text:
            fail(f"lab-load on {self.machine.name} wrote no result: {err.decode(errors='replace')}")
        totals = json.loads(text)
        info(f"[{self.machine.name}] load: {totals['requests']} requests, {totals['failed']} failed, "
             f"served by {totals['served_by']}")
        return totals

    def finish_without_failures(self, during):
        totals = self.finish()
        if totals["failed"]:
            fail(f"{totals['failed']} of {totals['requests']} requests failed during {during}:\n  "
                 + "\n  ".join(totals["reasons"]))
        if totals["requests"] < 50:
            fail(f"only {totals['requests']} requests ran during {during}: the load did not run")
        return totals
