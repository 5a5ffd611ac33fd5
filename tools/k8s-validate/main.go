// Command k8s-validate decodes Kubernetes manifests strictly with the real API types: every
// document must be a kind that client-go's scheme knows, and an unknown or duplicated field, or a
// value of the wrong type, is an error. It reads multi-document YAML from files or stdin ("-").
//
//	k8s-validate deploy/k8s/base/*.yaml
//	kustomize build deploy/k8s/overlays/production | k8s-validate -
//
// It prints one line per object and exits 1 when any document fails.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

func main() {
	args := os.Args[1:]
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: k8s-validate FILE|- ...")
		os.Exit(2)
	}
	// Strict: unknown and duplicate fields are errors, not silently dropped.
	decoder := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	failed, objects := 0, 0
	for _, name := range args {
		docs, err := documents(name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			failed++
			continue
		}
		for i, doc := range docs {
			where := fmt.Sprintf("%s: document %d", name, i+1)
			kind, err := validate(decoder, doc)
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s (%s): %v\n", where, kind, err)
				failed++
				continue
			}
			objects++
			fmt.Printf("ok %s\n", kind)
		}
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "k8s-validate: %d invalid document(s), %d valid\n", failed, objects)
		os.Exit(1)
	}
	fmt.Printf("k8s-validate: %d object(s) valid\n", objects)
}

// validate decodes one YAML document into its typed object and names it "group/version Kind name".
func validate(decoder runtime.Decoder, doc []byte) (string, error) {
	// YAMLToJSONStrict refuses duplicate keys, which the JSON decoder could not see.
	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return "?", err
	}
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	// Lenient read of the header only, to name the document in messages.
	_ = yaml.Unmarshal(doc, &meta)
	kind := fmt.Sprintf("%s %s %s", meta.APIVersion, meta.Kind, meta.Metadata.Name)
	if meta.APIVersion == "" || meta.Kind == "" {
		return kind, errors.New("apiVersion and kind are required")
	}
	if meta.Metadata.Name == "" {
		return kind, errors.New("metadata.name is required")
	}
	if _, _, err := decoder.Decode(data, nil, nil); err != nil {
		return kind, err
	}
	return kind, nil
}

// documents splits a file (or stdin for "-") into its non-empty YAML documents.
func documents(name string) ([][]byte, error) {
	var in io.Reader = os.Stdin
	if name != "-" {
		file, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer file.Close()
		in = file
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(in))
	var docs [][]byte
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

// stripComments drops comment-only lines, so a document of comments alone counts as empty.
func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if trimmed := bytes.TrimSpace(line); len(trimmed) > 0 && trimmed[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}
