"""Walks through shopmesh's order flow with the generated Python stubs.

Signed in as a customer (--user-id, --token) and, to stock a product, as an admin
(--admin-token): reads the customer's record, creates a product, places orders idempotently, pages
through them, watches one and cancels it, and decodes the google.rpc.Status details of an order
that cannot be filled. Every call has a deadline. With --ca it speaks TLS (Envoy's listener), with
--cert and --key mutual TLS (a service's own port); plaintext otherwise (the development profile).
The exit status is 1 when anything differs from the contract in proto/, so the script doubles as
an end-to-end check.

    .tools/venv/bin/python clients/python/shop_client.py --target 127.0.0.1:8080 \\
        --ca .certs/ca.crt --user-id usr_... --token "$TOKEN" --admin-token "$ADMIN_TOKEN"
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import sys
import uuid

# The generated package `shop` lives in the source root gen/python (shop/user/v1/user_pb2.py,
# ...): use the repo's copy, so that the stubs always match proto/.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "gen" / "python"))

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc
from shop.type.v1 import money_pb2
from shop.user.v1 import user_pb2, user_pb2_grpc

INITIAL_STOCK = 5
CONFIRMED = order_pb2.ORDER_STATE_CONFIRMED
CANCELLED = order_pb2.ORDER_STATE_CANCELLED


class Unexpected(Exception):
    """An outcome that differs from the contract."""


class _Details(
    collections.namedtuple(
        "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Signs every call in with `authorization: Bearer <token>`."""

    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def _with_token(self, details):
        return _Details(
            details.method,
            details.timeout,
            [*(details.metadata or []), self.header],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)


def step(n: int, rpc: str, text: str) -> None:
    print(f"{n} {rpc:<19} {text}", flush=True)


def state_name(state: int) -> str:
    return order_pb2.OrderState.Name(state)


def money(m: money_pb2.Money) -> str:
    return f"{m.amount_minor} {m.currency_code} minor units"


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Unexpected(message)


class Flow:
    def __init__(self, users, products, orders, admin_products, user_id: str, timeout: float) -> None:
        self.users = users
        self.products = products
        self.orders = orders
        self.admin_products = admin_products
        self.user_id = user_id
        self.timeout = timeout

    def place_order(self, user_id: str, product_id: str, quantity: int, request_id: str):
        return self.orders.CreateOrder(
            order_pb2.CreateOrderRequest(
                user_id=user_id,
                lines=[order_pb2.OrderLine(product_id=product_id, quantity=quantity)],
                request_id=request_id,
            ),
            timeout=self.timeout,
        ).order

    def run(self) -> None:
        # 1. The signed-in customer's own record, and a product with a little stock (as an admin).
        user = self.users.GetUser(
            user_pb2.GetUserRequest(user_id=self.user_id), timeout=self.timeout
        ).user
        step(1, "GetUser", f"user_id={user.user_id} email={user.email}")

        product = self.admin_products.CreateProduct(
            product_pb2.CreateProductRequest(
                product=product_pb2.Product(
                    name="Demo widget",
                    price=money_pb2.Money(currency_code="EUR", amount_minor=1250),
                    stock_quantity=INITIAL_STOCK,
                )
            ),
            timeout=self.timeout,
        ).product
        step(
            1,
            "CreateProduct",
            f"product_id={product.product_id} stock={product.stock_quantity} price={money(product.price)}",
        )

        # 2. An order under a fresh request_id; a retry with the same id returns the same order.
        first = self.place_order(user.user_id, product.product_id, 2, uuid.uuid4().hex)
        step(
            2,
            "CreateOrder",
            f"order_id={first.order_id} state={state_name(first.state)} "
            f"total={money(first.total)} request_id={first.request_id}",
        )
        expect(
            first.state == CONFIRMED,
            f"CreateOrder: state {state_name(first.state)}, want ORDER_STATE_CONFIRMED",
        )
        want_total = 2 * product.price.amount_minor
        expect(
            first.total.amount_minor == want_total,
            f"CreateOrder: total {money(first.total)}, want {want_total}",
        )
        again = self.place_order(user.user_id, product.product_id, 2, first.request_id)
        expect(
            again.order_id == first.order_id,
            f"CreateOrder retry: order_id {again.order_id}, want {first.order_id} (same request_id)",
        )
        step(2, "CreateOrder", "retry with the same request_id returned the same order")
        second = self.place_order(user.user_id, product.product_id, 1, uuid.uuid4().hex)
        step(
            2,
            "CreateOrder",
            f"order_id={second.order_id} state={state_name(second.state)} (a second order, for two pages)",
        )

        # 3. The user's orders, one per page.
        listed, pages, token = [], 0, ""
        while True:
            resp = self.orders.ListOrders(
                order_pb2.ListOrdersRequest(user_id=user.user_id, page_size=1, page_token=token),
                timeout=self.timeout,
            )
            pages += 1
            expect(len(resp.orders) <= 1, f"ListOrders: {len(resp.orders)} orders on a page of size 1")
            for o in resp.orders:
                expect(o.order_id not in listed, f"ListOrders: {o.order_id} on two pages")
                listed.append(o.order_id)
            token = resp.next_page_token
            if not token:
                break
            expect(pages <= 1000, f"ListOrders: still a next_page_token after {pages} pages")
        step(3, "ListOrders", f"page_size=1: {pages} pages, orders {', '.join(listed)}")
        # The user may have orders of earlier runs: this run's must be there, newest first.
        expect(
            second.order_id in listed
            and first.order_id in listed
            and listed.index(second.order_id) < listed.index(first.order_id),
            f"ListOrders: got {listed}, want {second.order_id} then {first.order_id} among them",
        )

        # 4. and 5. Watch the first order, cancel it, and see the change on the stream.
        stream = self.orders.WatchOrder(
            order_pb2.WatchOrderRequest(order_id=first.order_id), timeout=3 * self.timeout
        )
        try:
            msg = next(stream)
            step(4, "WatchOrder", f"first message: state={state_name(msg.order.state)}")
            expect(
                msg.order.state == CONFIRMED,
                f"WatchOrder: state {state_name(msg.order.state)}, want ORDER_STATE_CONFIRMED",
            )

            cancelled = self.orders.CancelOrder(
                order_pb2.CancelOrderRequest(order_id=first.order_id), timeout=self.timeout
            ).order
            step(5, "CancelOrder", f"order_id={cancelled.order_id} state={state_name(cancelled.state)}")
            expect(
                cancelled.state == CANCELLED,
                f"CancelOrder: state {state_name(cancelled.state)}, want ORDER_STATE_CANCELLED",
            )

            for msg in stream:
                if msg.order.state == CANCELLED:
                    step(5, "WatchOrder", f"stream showed state={state_name(msg.order.state)}")
                    break
            else:
                raise Unexpected("WatchOrder: the stream ended without showing ORDER_STATE_CANCELLED")
            extra = next(stream, None)
            expect(extra is None, "WatchOrder: the stream went on after a final state")
            step(5, "WatchOrder", "stream ended after the final state")
        finally:
            stream.cancel()

        # 6. An order beyond the stock fails with FAILED_PRECONDITION and says why in its details.
        try:
            self.place_order(user.user_id, product.product_id, 1000, uuid.uuid4().hex)
        except grpc.RpcError as err:
            call = err
        else:
            raise Unexpected("CreateOrder beyond stock: succeeded, want FAILED_PRECONDITION")
        step(6, "CreateOrder", f"quantity=1000 -> {call.code().name}: {call.details()}")
        expect(
            call.code() == grpc.StatusCode.FAILED_PRECONDITION,
            f"CreateOrder beyond stock: code {call.code().name}, want FAILED_PRECONDITION",
        )
        status = rpc_status.from_call(call)
        expect(
            status is not None,
            "CreateOrder beyond stock: no google.rpc.Status details (grpc-status-details-bin)",
        )
        reason, violations = "", 0
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
                step(
                    6,
                    "ErrorInfo",
                    f"reason={info.reason} domain={info.domain} metadata={dict(info.metadata)}",
                )
            elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
                failure = error_details_pb2.PreconditionFailure()
                detail.Unpack(failure)
                for v in failure.violations:
                    violations += 1
                    step(
                        6,
                        "PreconditionFailure",
                        f"type={v.type} subject={v.subject} description={v.description!r}",
                    )
            else:
                step(6, "detail", detail.type_url)
        expect(
            reason == "INSUFFICIENT_STOCK" and violations > 0,
            "CreateOrder beyond stock: want ErrorInfo reason INSUFFICIENT_STOCK and a PreconditionFailure "
            f"violation, got reason {reason!r} and {violations} violations",
        )

        # The cancelled order gave its stock back and the failed one held none.
        stock = self.products.GetProduct(
            product_pb2.GetProductRequest(product_id=product.product_id), timeout=self.timeout
        ).product.stock_quantity
        step(6, "GetProduct", f"stock={stock}")
        expect(
            stock == INITIAL_STOCK - 1,
            f"GetProduct: stock {stock}, want {INITIAL_STOCK - 1} (only the second order stands)",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", "-user", default="127.0.0.1:50051", help="UserService address")
    parser.add_argument("--product", "-product", default="127.0.0.1:50052", help="ProductService address")
    parser.add_argument("--order", "-order", default="127.0.0.1:50053", help="OrderService address")
    parser.add_argument(
        "--target",
        "-target",
        help="send every service through this one address (Envoy: 127.0.0.1:8080); overrides the others",
    )
    parser.add_argument(
        "--timeout", "-timeout", type=float, default=5.0, help="deadline of each call, seconds"
    )
    parser.add_argument("--user-id", "-user-id", required=True, help="the signed-in customer's user_id")
    parser.add_argument("--token", "-token", required=True, help="the customer's bearer token")
    parser.add_argument(
        "--admin-token", "-admin-token", required=True, help="an admin's bearer token, to create the product"
    )
    parser.add_argument("--ca", "-ca", help="trust this CA and speak TLS (e.g. .certs/ca.crt)")
    parser.add_argument("--cert", "-cert", help="client certificate for mutual TLS")
    parser.add_argument("--key", "-key", help="its private key")
    args = parser.parse_args(argv)
    # An empty value (a shell variable never set) would fail later, naming the token.
    if not (args.user_id and args.token and args.admin_token):
        parser.error("--user-id, --token and --admin-token must not be empty")
    if args.target:
        args.user = args.product = args.order = args.target

    credentials = None
    if args.ca:
        read = lambda name: pathlib.Path(name).read_bytes() if name else None  # noqa: E731
        credentials = grpc.ssl_channel_credentials(read(args.ca), read(args.key), read(args.cert))

    channels: dict[str, grpc.Channel] = {}

    def channel(addr: str) -> grpc.Channel:
        if addr not in channels:
            channels[addr] = (
                grpc.secure_channel(addr, credentials) if credentials else grpc.insecure_channel(addr)
            )
        return channels[addr]

    customer = BearerToken(args.token)
    admin = BearerToken(args.admin_token)
    flow = Flow(
        user_pb2_grpc.UserServiceStub(grpc.intercept_channel(channel(args.user), customer)),
        product_pb2_grpc.ProductServiceStub(grpc.intercept_channel(channel(args.product), customer)),
        order_pb2_grpc.OrderServiceStub(grpc.intercept_channel(channel(args.order), customer)),
        product_pb2_grpc.ProductServiceStub(grpc.intercept_channel(channel(args.product), admin)),
        args.user_id,
        args.timeout,
    )
    try:
        flow.run()
    except Unexpected as err:
        print(f"FAIL {err}", file=sys.stderr)
        return 1
    except grpc.RpcError as err:
        print(f"FAIL {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    finally:
        for ch in channels.values():
            ch.close()
    print("ok: every step matched the contract")
    return 0


if __name__ == "__main__":
    sys.exit(main())
