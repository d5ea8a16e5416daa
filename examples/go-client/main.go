// Command strata-client lists one user's activity through Strata's gRPC API.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	stratav1 "github.com/strata-events/strata/gen/go/strata/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "API address (plaintext)")
	user := flag.String("user", "", "user_id (customers: empty = the token's sub)")
	start := flag.String("start", "", "range start, RFC 3339 (inclusive)")
	end := flag.String("end", "", "range end, RFC 3339 (exclusive)")
	maxPages := flag.Int("pages", 3, "stop after this many pages")
	flag.Parse()

	conn, err := grpc.Dial(*addr, grpc.WithInsecure()) // grpc-go >= 1.34: grpc.WithTransportCredentials(insecure.NewCredentials())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	client := stratav1.NewHistoryServiceClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+os.Getenv("STRATA_TOKEN"))

	req := &stratav1.ListActivityRequest{
		UserId:    *user,
		StartTime: ts(*start),
		EndTime:   ts(*end),
		Order:     stratav1.Order_ORDER_DESCENDING,
		PageSize:  10,
	}
	for page := 1; page <= *maxPages; page++ {
		resp, err := client.ListActivity(ctx, req)
		if err != nil {
			printError(err)
			os.Exit(1)
		}
		fmt.Printf("page %d: %d events\n", page, len(resp.Events))
		for _, e := range resp.Events {
			fmt.Printf("  %s  %-16s %s\n", e.EventId, e.Kind, e.EventTime.AsTime().Format(time.RFC3339Nano))
		}
		if resp.NextPageToken == "" {
			return
		}
		req.PageToken = resp.NextPageToken // same filters, next page
	}
}

// ts parses an RFC 3339 time; empty means unset.
func ts(s string) *timestamppb.Timestamp {
	if s == "" {
		return nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		log.Fatalf("bad time %q: %v", s, err)
	}
	return timestamppb.New(t)
}

// printError prints the gRPC status and its rich error details.
func printError(err error) {
	st, _ := status.FromError(err)
	fmt.Printf("error: code=%s message=%q\n", st.Code(), st.Message())
	for _, d := range st.Details() {
		switch info := d.(type) {
		case *errdetails.ErrorInfo:
			fmt.Printf("  ErrorInfo: reason=%s domain=%s metadata=%v\n", info.Reason, info.Domain, info.Metadata)
		case *errdetails.BadRequest:
			for _, v := range info.FieldViolations {
				fmt.Printf("  BadRequest: field=%s description=%q\n", v.Field, v.Description)
			}
		case *errdetails.RequestInfo:
			fmt.Printf("  RequestInfo: request_id=%s\n", info.RequestId)
		case *errdetails.RetryInfo:
			fmt.Printf("  RetryInfo: retry_delay=%v\n", info.RetryDelay)
		default:
			fmt.Printf("  detail: %T %v\n", d, d)
		}
	}
}
