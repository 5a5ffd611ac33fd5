// Command shop-client walks through shopmesh's order flow with the generated Go stubs, signed in
// as a customer (-user-id, -token) and, to stock a product, as an admin (-admin-token): it reads
// the customer's record, creates a product, places orders idempotently, pages through them,
// watches one and cancels it, and decodes the google.rpc.Status details of an order that cannot
// be filled. With -ca it speaks TLS (Envoy's listener), with -cert and -key mutual TLS (a
// service's own port); plaintext otherwise (the development profile).
//
// Every call has a deadline. The exit status is 1 when anything differs from the contract in
// proto/, so the command doubles as an end-to-end check.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	orderv1 "github.com/shopmesh/shopmesh/gen/go/shop/order/v1"
	productv1 "github.com/shopmesh/shopmesh/gen/go/shop/product/v1"
	typev1 "github.com/shopmesh/shopmesh/gen/go/shop/type/v1"
	userv1 "github.com/shopmesh/shopmesh/gen/go/shop/user/v1"
)

const initialStock = 5

func main() {
	userAddr := flag.String("user", "127.0.0.1:50051", "UserService address")
	productAddr := flag.String("product", "127.0.0.1:50052", "ProductService address")
	orderAddr := flag.String("order", "127.0.0.1:50053", "OrderService address")
	target := flag.String("target", "", "send every service through this one address (Envoy: 127.0.0.1:8080); overrides -user, -product and -order")
	timeout := flag.Duration("timeout", 5*time.Second, "deadline of each call")
	userID := flag.String("user-id", "", "the signed-in customer's user_id (required)")
	token := flag.String("token", "", "the customer's bearer token (npm run token -- --user <user_id>)")
	adminToken := flag.String("admin-token", "", "an admin's bearer token, to create the product")
	caFile := flag.String("ca", "", "trust this CA and speak TLS (e.g. .certs/ca.crt); plaintext without")
	certFile := flag.String("cert", "", "client certificate for mutual TLS (a service's own port)")
	keyFile := flag.String("key", "", "its private key")
	flag.Parse()
	if *userID == "" || *token == "" || *adminToken == "" {
		fail("-user-id, -token and -admin-token are required")
	}
	transport := insecure.NewCredentials()
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fail("read -ca: %v", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			fail("-ca %s holds no certificate", *caFile)
		}
		config := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if *certFile != "" {
			pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
			if err != nil {
				fail("load -cert/-key: %v", err)
			}
			config.Certificates = []tls.Certificate{pair}
		}
		transport = credentials.NewTLS(config)
	}
	if *target != "" {
		*userAddr, *productAddr, *orderAddr = *target, *target, *target
	}

	conns := map[string]*grpc.ClientConn{}
	dial := func(addr string) *grpc.ClientConn {
		if cc, ok := conns[addr]; ok {
			return cc
		}
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(transport))
		if err != nil {
			fail("dial %s: %v", addr, err)
		}
		conns[addr] = cc
		return cc
	}
	f := &flow{
		users:    userv1.NewUserServiceClient(dial(*userAddr)),
		products: productv1.NewProductServiceClient(dial(*productAddr)),
		orders:   orderv1.NewOrderServiceClient(dial(*orderAddr)),
		timeout:  *timeout,
		userID:   *userID,
		token:    *token,
		admin:    *adminToken,
	}
	f.run()
	for _, cc := range conns {
		cc.Close()
	}
	fmt.Println("ok: every step matched the contract")
}

type flow struct {
	users    userv1.UserServiceClient
	products productv1.ProductServiceClient
	orders   orderv1.OrderServiceClient
	timeout  time.Duration
	userID   string
	token    string
	admin    string
}

// ctx returns a context that carries the per-call deadline and the customer's token.
func (f *flow) ctx() (context.Context, context.CancelFunc) {
	return f.as(f.token)
}

// as returns a context that carries the per-call deadline and signs in with token.
func (f *flow) as(token string) (context.Context, context.CancelFunc) {
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
	return context.WithTimeout(ctx, f.timeout)
}

func (f *flow) run() {
	// 1. The signed-in customer's own record, and a product with a little stock (as an admin).
	ctx, cancel := f.ctx()
	u, err := f.users.GetUser(ctx, &userv1.GetUserRequest{UserId: f.userID})
	cancel()
	check("GetUser", err)
	user := u.GetUser()
	step(1, "GetUser", "user_id=%s email=%s", user.GetUserId(), user.GetEmail())

	ctx, cancel = f.as(f.admin)
	p, err := f.products.CreateProduct(ctx, &productv1.CreateProductRequest{Product: &productv1.Product{
		Name:          "Demo widget",
		Price:         &typev1.Money{CurrencyCode: "EUR", AmountMinor: 1250},
		StockQuantity: initialStock,
	}})
	cancel()
	check("CreateProduct", err)
	product := p.GetProduct()
	step(1, "CreateProduct", "product_id=%s stock=%d price=%s", product.GetProductId(), product.GetStockQuantity(), money(product.GetPrice()))

	// 2. An order under a fresh request_id; a retry with the same id returns the same order.
	first := f.placeOrder(user.GetUserId(), product.GetProductId(), 2, rand.Text())
	step(2, "CreateOrder", "order_id=%s state=%s total=%s request_id=%s", first.GetOrderId(), first.GetState(), money(first.GetTotal()), first.GetRequestId())
	if first.GetState() != orderv1.OrderState_ORDER_STATE_CONFIRMED {
		fail("CreateOrder: state %s, want ORDER_STATE_CONFIRMED", first.GetState())
	}
	if want := 2 * product.GetPrice().GetAmountMinor(); first.GetTotal().GetAmountMinor() != want {
		fail("CreateOrder: total %s, want %d", money(first.GetTotal()), want)
	}
	if again := f.placeOrder(user.GetUserId(), product.GetProductId(), 2, first.GetRequestId()); again.GetOrderId() != first.GetOrderId() {
		fail("CreateOrder retry: order_id %s, want %s (same request_id)", again.GetOrderId(), first.GetOrderId())
	}
	step(2, "CreateOrder", "retry with the same request_id returned the same order")
	second := f.placeOrder(user.GetUserId(), product.GetProductId(), 1, rand.Text())
	step(2, "CreateOrder", "order_id=%s state=%s (a second order, for two pages)", second.GetOrderId(), second.GetState())

	// 3. The user's orders, one per page.
	var listed []string
	pages := 0
	for token := ""; ; {
		ctx, cancel := f.ctx()
		resp, err := f.orders.ListOrders(ctx, &orderv1.ListOrdersRequest{UserId: user.GetUserId(), PageSize: 1, PageToken: token})
		cancel()
		check("ListOrders", err)
		pages++
		if len(resp.GetOrders()) > 1 {
			fail("ListOrders: %d orders on a page of size 1", len(resp.GetOrders()))
		}
		for _, o := range resp.GetOrders() {
			if slices.Contains(listed, o.GetOrderId()) {
				fail("ListOrders: %s on two pages", o.GetOrderId())
			}
			listed = append(listed, o.GetOrderId())
		}
		token = resp.GetNextPageToken()
		if token == "" {
			break
		}
		if pages > 1000 {
			fail("ListOrders: still a next_page_token after %d pages", pages)
		}
	}
	step(3, "ListOrders", "page_size=1: %d pages, orders %s", pages, strings.Join(listed, ", "))
	// The user may have orders of earlier runs: this run's must be there, newest first.
	at, was := slices.Index(listed, second.GetOrderId()), slices.Index(listed, first.GetOrderId())
	if at < 0 || was < 0 || at > was {
		fail("ListOrders: got %v, want %s then %s among them", listed, second.GetOrderId(), first.GetOrderId())
	}

	// 4. and 5. Watch the first order, cancel it, and see the change on the stream.
	signedIn := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+f.token)
	watchCtx, stopWatch := context.WithTimeout(signedIn, 3*f.timeout)
	defer stopWatch()
	stream, err := f.orders.WatchOrder(watchCtx, &orderv1.WatchOrderRequest{OrderId: first.GetOrderId()})
	check("WatchOrder", err)
	msg, err := stream.Recv()
	check("WatchOrder", err)
	step(4, "WatchOrder", "first message: state=%s", msg.GetOrder().GetState())
	if msg.GetOrder().GetState() != orderv1.OrderState_ORDER_STATE_CONFIRMED {
		fail("WatchOrder: state %s, want ORDER_STATE_CONFIRMED", msg.GetOrder().GetState())
	}

	ctx, cancel = f.ctx()
	c, err := f.orders.CancelOrder(ctx, &orderv1.CancelOrderRequest{OrderId: first.GetOrderId()})
	cancel()
	check("CancelOrder", err)
	step(5, "CancelOrder", "order_id=%s state=%s", c.GetOrder().GetOrderId(), c.GetOrder().GetState())
	if c.GetOrder().GetState() != orderv1.OrderState_ORDER_STATE_CANCELLED {
		fail("CancelOrder: state %s, want ORDER_STATE_CANCELLED", c.GetOrder().GetState())
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			fail("WatchOrder: the stream ended without showing ORDER_STATE_CANCELLED")
		}
		check("WatchOrder after CancelOrder", err)
		if s := msg.GetOrder().GetState(); s == orderv1.OrderState_ORDER_STATE_CANCELLED {
			step(5, "WatchOrder", "stream showed state=%s", s)
			break
		}
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		fail("WatchOrder: the stream went on after a final state (%v)", err)
	}
	step(5, "WatchOrder", "stream ended after the final state")
	stopWatch()

	// 6. An order beyond the stock fails with FAILED_PRECONDITION and says why in its details.
	ctx, cancel = f.ctx()
	_, err = f.orders.CreateOrder(ctx, &orderv1.CreateOrderRequest{
		UserId:    user.GetUserId(),
		Lines:     []*orderv1.OrderLine{{ProductId: product.GetProductId(), Quantity: 1000}},
		RequestId: rand.Text(),
	})
	cancel()
	st := status.Convert(err)
	step(6, "CreateOrder", "quantity=1000 -> %s: %s", st.Code(), st.Message())
	if st.Code() != codes.FailedPrecondition {
		fail("CreateOrder beyond stock: code %s, want FailedPrecondition", st.Code())
	}
	var reason string
	var violations int
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			reason = d.GetReason()
			step(6, "ErrorInfo", "reason=%s domain=%s metadata=%v", d.GetReason(), d.GetDomain(), d.GetMetadata())
		case *errdetails.PreconditionFailure:
			for _, v := range d.GetViolations() {
				violations++
				step(6, "PreconditionFailure", "type=%s subject=%s description=%q", v.GetType(), v.GetSubject(), v.GetDescription())
			}
		case error: // a detail whose type this binary does not link in
			step(6, "detail", "undecodable: %v", d)
		default:
			step(6, "detail", "%T", d)
		}
	}
	if reason != "INSUFFICIENT_STOCK" || violations == 0 {
		fail("CreateOrder beyond stock: want ErrorInfo reason INSUFFICIENT_STOCK and a PreconditionFailure violation, got reason %q and %d violations", reason, violations)
	}

	// The cancelled order gave its stock back and the failed one held none.
	ctx, cancel = f.ctx()
	g, err := f.products.GetProduct(ctx, &productv1.GetProductRequest{ProductId: product.GetProductId()})
	cancel()
	check("GetProduct", err)
	step(6, "GetProduct", "stock=%d", g.GetProduct().GetStockQuantity())
	if got, want := g.GetProduct().GetStockQuantity(), int32(initialStock-1); got != want {
		fail("GetProduct: stock %d, want %d (only the second order stands)", got, want)
	}
}

func (f *flow) placeOrder(userID, productID string, quantity int32, requestID string) *orderv1.Order {
	ctx, cancel := f.ctx()
	defer cancel()
	resp, err := f.orders.CreateOrder(ctx, &orderv1.CreateOrderRequest{
		UserId:    userID,
		Lines:     []*orderv1.OrderLine{{ProductId: productID, Quantity: quantity}},
		RequestId: requestID,
	})
	check("CreateOrder", err)
	return resp.GetOrder()
}

func money(m *typev1.Money) string {
	return fmt.Sprintf("%d %s minor units", m.GetAmountMinor(), m.GetCurrencyCode())
}

func step(n int, rpc, format string, args ...any) {
	fmt.Printf("%d %-19s %s\n", n, rpc, fmt.Sprintf(format, args...))
}

// check stops the program when a call that should have succeeded did not.
func check(rpc string, err error) {
	if err != nil {
		st := status.Convert(err)
		fail("%s: %s: %s", rpc, st.Code(), st.Message())
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL "+format+"\n", args...)
	os.Exit(1)
}
