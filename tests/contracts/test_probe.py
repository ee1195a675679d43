import time
from fltask_harness import h, model_uri
def test_probe(task, devices, chain, registry, networks, accounts):
    w3 = chain.provider.web3
    c = w3.eth.contract(address=registry.address, abi=[a.model_dump(mode="json", by_alias=True) for a in registry.contract_type.abi])
    t=time.time()
    for i, d in enumerate(w3.eth.accounts[4:14]):
        mh = h(f"n{i}")
        tx = c.functions.submit(task.task_id, mh, model_uri(mh), d, 1).transact({"from": d, "gas": 500000})
        r = w3.eth.get_transaction_receipt(tx)
    print("w3 10 submits gas given", time.time()-t, r.gasUsed)
    t=time.time()
    for i in range(10):
        try:
            task.registry.submit.call(task.task_id, h("m0"), "x", accounts[4], 1, sender=accounts[4])
        except Exception as ex: e = ex
    print("ape 10 call reverts", time.time()-t, type(e))
    t=time.time()
    for i in range(10):
        try:
            c.functions.submit(task.task_id, h("m0"), "x", accounts[4].address, 1).call({"from": accounts[4].address})
        except Exception as ex: e = ex
    print("w3 10 call reverts", time.time()-t, type(e))
    print(chain.pending_timestamp, chain.blocks.head.timestamp)
    time.sleep(2)
    print(chain.pending_timestamp, chain.blocks.head.timestamp)
    t=time.time()
    for i in range(10): chain.mine()
    print("10 mines", time.time()-t)
