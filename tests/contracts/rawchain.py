"""A minimal, fast client for the stateful test: ABI encoding with eth_abi and raw provider calls.

web3's contract layer costs ~10-30 ms of Python per call; the property test makes tens of
thousands, so it talks to the chain directly: the in-process EthereumTester object, or anvil's
JSON-RPC endpoint (through the ape provider's web3 HTTP provider, without middlewares).
"""

from __future__ import annotations

import time
from ast import literal_eval

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak

GAS = 3_000_000
GAS_PRICE = 10**10


def _type(p: dict) -> str:
    t = p["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_type(c) for c in p["components"]) + ")" + t[len("tuple") :]
    return t


class Abi:
    """Selectors, encoders and decoders for one contract's ABI (a list of JSON dicts)."""

    def __init__(self, abi: list[dict]):
        self.functions, self.errors, self.events = {}, {}, {}
        for e in abi:
            kind = e.get("type")
            if kind == "function":
                types = [_type(i) for i in e["inputs"]]
                sel = keccak(f"{e['name']}({','.join(types)})".encode())[:4]
                self.functions[e["name"]] = (sel, types, [_type(o) for o in e["outputs"]])
            elif kind == "error":
                types = [_type(i) for i in e["inputs"]]
                sel = keccak(f"{e['name']}({','.join(types)})".encode())[:4]
                self.errors[sel] = (e["name"], [i["name"] for i in e["inputs"]], types)
            elif kind == "event":
                types = [_type(i) for i in e["inputs"]]
                topic = keccak(f"{e['name']}({','.join(types)})".encode())
                self.events[topic] = (e["name"], e["inputs"])

    def encode(self, fn: str, *args) -> bytes:
        sel, types, _ = self.functions[fn]
        return sel + abi_encode(types, list(args))

    def decode_output(self, fn: str, data: bytes):
        return abi_decode(self.functions[fn][2], data)

    def decode_error(self, data: bytes) -> tuple[str, dict]:
        name, names, types = self.errors[data[:4]]
        return name, dict(zip(names, abi_decode(types, data[4:]), strict=True))

    def decode_logs(self, logs: list[tuple[bytes, list[bytes], bytes]]) -> list[tuple[str, dict]]:
        """(event name, arguments) for every log of a known event (indexed args from topics)."""
        out = []
        for _addr, topics, data in logs:
            if not topics or topics[0] not in self.events:
                continue
            name, inputs = self.events[topics[0]]
            indexed = [i for i in inputs if i["indexed"]]
            plain = [i for i in inputs if not i["indexed"]]
            args = dict(zip([i["name"] for i in plain], abi_decode([_type(i) for i in plain], data), strict=True))
            for i, topic in zip(indexed, topics[1:], strict=True):
                args[i["name"]] = abi_decode([_type(i)], topic)[0]
            out.append((name, args))
        return out


class Reverted(Exception):
    def __init__(self, data: bytes):
        super().__init__(data.hex())
        self.data = data


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _bytes(x) -> bytes:
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    return bytes.fromhex(x[2:] if x.startswith("0x") else x)


class EthTesterBackend:
    """The in-process chain (ape's EthereumTester), called directly."""

    def __init__(self, tester):
        self.t = tester

    def call(self, sender: str, to: str, data: bytes, value: int = 0) -> bytes:
        from eth_tester.exceptions import TransactionFailed

        try:
            out = self.t.call({"from": sender, "to": to, "data": _hex(data), "value": value}, "latest")
        except TransactionFailed as exc:
            raw = exc.args[0] if exc.args else b""
            if isinstance(raw, str):
                raw = raw.split("execution reverted: ")[-1]
                raw = literal_eval(raw) if raw.startswith(("b'", 'b"')) else _bytes(raw)
            raise Reverted(bytes(raw)) from None
        return _bytes(out)

    def send(self, sender: str, to: str, data: bytes, value: int = 0) -> dict:
        tx = {"from": sender, "to": to, "data": _hex(data), "value": value, "gas": GAS, "gas_price": GAS_PRICE}
        receipt = self.t.get_transaction_receipt(self.t.send_transaction(tx))
        logs = [(lg["address"], [_bytes(t) for t in lg["topics"]], _bytes(lg["data"])) for lg in receipt["logs"]]
        return {"status": receipt["status"], "block": receipt["block_number"], "logs": logs}

    def balance(self, addr: str) -> int:
        return self.t.get_balance(addr)

    def now(self) -> int:
        return self.t.get_block_by_number("latest")["timestamp"]


class RpcBackend:
    """A JSON-RPC node (anvil) with unlocked accounts, through a web3 HTTP provider's raw requests."""

    def __init__(self, provider):
        self.p = provider

    def _req(self, method: str, params: list):
        resp = self.p.make_request(method, params)
        if "error" in resp:
            err = resp["error"]
            data = err.get("data")
            if isinstance(data, dict):
                data = data.get("data")
            if isinstance(data, str) and data.startswith("0x"):
                raise Reverted(_bytes(data))
            msg = err.get("message", "")
            if "custom error 0x" in msg:  # "execution reverted: custom error 0xSELECTOR: ARGS"
                sel, _, args = msg.split("custom error 0x", 1)[1].partition(":")
                raise Reverted(_bytes(sel + args.strip()))
            raise RuntimeError(f"{method}: {err}")
        return resp["result"]

    def call(self, sender: str, to: str, data: bytes, value: int = 0) -> bytes:
        call = {"from": sender, "to": to, "data": _hex(data), "value": hex(value)}
        return _bytes(self._req("eth_call", [call, "latest"]))

    def send(self, sender: str, to: str, data: bytes, value: int = 0) -> dict:
        tx = {
            "from": sender,
            "to": to,
            "data": _hex(data),
            "value": hex(value),
            "gas": hex(GAS),
            "gasPrice": hex(GAS_PRICE),
        }
        tx_hash = self._req("eth_sendTransaction", [tx])
        receipt = self._req("eth_getTransactionReceipt", [tx_hash])
        for _ in range(200):  # automine answers at once; a node mining on an interval may lag
            if receipt is not None:
                break
            time.sleep(0.005)
            receipt = self._req("eth_getTransactionReceipt", [tx_hash])
        logs = [(lg["address"], [_bytes(t) for t in lg["topics"]], _bytes(lg["data"])) for lg in receipt["logs"]]
        return {"status": int(receipt["status"], 16), "block": int(receipt["blockNumber"], 16), "logs": logs}

    def balance(self, addr: str) -> int:
        return int(self._req("eth_getBalance", [addr, "latest"]), 16)

    def now(self) -> int:
        return int(self._req("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)


def backend_for(provider):
    """The fast backend for an ape provider (in-process `test` or `foundry`)."""
    tester = getattr(provider, "tester", None)
    if tester is not None and hasattr(tester, "ethereum_tester"):
        return EthTesterBackend(tester.ethereum_tester)
    return RpcBackend(provider.web3.provider)
