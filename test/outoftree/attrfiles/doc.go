// Package attrfiles is an out-of-tree volume plugin, example.com/attribute-files:
// a volume that holds one file per attribute of a pod's inline CSI volume.
//
//	volumes:
//	- name: settings
//	  csi:
//	    driver: example.com/attribute-files
//	    volumeAttributes:
//	      motd.txt: "hello"
//
// It lives in its own Go module, imports only volume-agent's public packages,
// and is added to the agent through cmd/volume-agent/app.WithPlugins.
package attrfiles
