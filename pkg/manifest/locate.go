package manifest

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

var jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// locateDecodeError walks the JSON data alongside the Go type typ, found at
// path, and returns a field error for the first value that does not decode
// into its field's type (a resource quantity that does not parse, a string
// where a number belongs), or nil when no single value is to blame. The
// decoder's own error often names neither the field nor the value.
func locateDecodeError(data []byte, typ reflect.Type, path *field.Path) *field.Error {
	err := json.Unmarshal(data, reflect.New(typ).Interface())
	if err == nil {
		return nil
	}
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if !reflect.PointerTo(typ).Implements(jsonUnmarshalerType) {
		switch typ.Kind() {
		case reflect.Struct:
			var fields map[string]json.RawMessage
			if json.Unmarshal(data, &fields) == nil {
				names := make([]string, 0, len(fields))
				for name := range fields {
					names = append(names, name)
				}
				slices.Sort(names)
				for _, name := range names {
					if fieldType, ok := jsonFieldType(typ, name); ok {
						if fieldErr := locateDecodeError(fields[name], fieldType, path.Child(name)); fieldErr != nil {
							return fieldErr
						}
					}
				}
			}
		case reflect.Slice:
			var items []json.RawMessage
			if json.Unmarshal(data, &items) == nil {
				for i, item := range items {
					if fieldErr := locateDecodeError(item, typ.Elem(), path.Index(i)); fieldErr != nil {
						return fieldErr
					}
				}
			}
		case reflect.Map:
			var entries map[string]json.RawMessage
			if json.Unmarshal(data, &entries) == nil {
				keys := make([]string, 0, len(entries))
				for key := range entries {
					keys = append(keys, key)
				}
				slices.Sort(keys)
				for _, key := range keys {
					if fieldErr := locateDecodeError(entries[key], typ.Elem(), path.Key(key)); fieldErr != nil {
						return fieldErr
					}
				}
			}
		}
	}
	if path == nil {
		return nil
	}
	return field.Invalid(path, jsonValue(data), strings.TrimPrefix(err.Error(), "json: "))
}

// jsonFieldType returns the type of the field of the struct type typ that
// JSON calls name, looking into inlined (embedded) structs.
func jsonFieldType(typ reflect.Type, name string) (reflect.Type, bool) {
	for i := range typ.NumField() {
		structField := typ.Field(i)
		if !structField.IsExported() {
			continue
		}
		tagName, options, _ := strings.Cut(structField.Tag.Get("json"), ",")
		if tagName == "-" && options == "" {
			continue
		}
		if tagName == "" && (structField.Anonymous || strings.Contains(options, "inline")) {
			embedded := structField.Type
			if embedded.Kind() == reflect.Pointer {
				embedded = embedded.Elem()
			}
			if embedded.Kind() == reflect.Struct {
				if fieldType, ok := jsonFieldType(embedded, name); ok {
					return fieldType, true
				}
				continue
			}
		}
		if tagName == "" {
			tagName = structField.Name
		}
		if tagName == name {
			return structField.Type, true
		}
	}
	return nil, false
}

// jsonValue returns a JSON value for an error message: a string as a Go
// string, anything else as its JSON text.
func jsonValue(data []byte) any {
	var value string
	if json.Unmarshal(data, &value) == nil {
		return value
	}
	return json.RawMessage(bytes.TrimSpace(data))
}
